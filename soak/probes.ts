/**
 * What the soak measures of the daemon process from outside, through /proc:
 * open descriptors, threads and resident memory.
 */
import { readdir, readFile, readlink } from "node:fs/promises";

/** One reading of the daemon's resources. */
export interface ProcessSample {
  /** Entries of /proc/PID/fd. */
  readonly fds: number;
  /** Entries of /proc/PID/task (the main thread, workers, V8's and libuv's threads). */
  readonly threads: number;
  /** VmRSS, in MiB. */
  readonly rssMiB: number;
}

/** Reads /proc/PID/{fd,task,status}; rejects if the process is gone. */
export async function sampleProcess(pid: number): Promise<ProcessSample> {
  const [fds, tasks, status] = await Promise.all([
    readdir(`/proc/${pid}/fd`),
    readdir(`/proc/${pid}/task`),
    readFile(`/proc/${pid}/status`, "utf8"),
  ]);
  const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!rss) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return { fds: fds.length, threads: tasks.length, rssMiB: Number(rss[1]) / 1024 };
}

/** Names of the descriptors the process holds (targets of /proc/PID/fd/N), for a report when fds leaked. */
export async function describeFds(pid: number): Promise<string[]> {
  const names = await readdir(`/proc/${pid}/fd`);
  const targets = await Promise.all(
    names.map((n) =>
      readlink(`/proc/${pid}/fd/${n}`).then(
        (t) => `${n} → ${t}`,
        () => `${n} → ?`,
      ),
    ),
  );
  return targets;
}
