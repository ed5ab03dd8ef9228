/** Process inspection through /proc (no procps needed), for tests that must see what the daemon spawns. */
import { readdirSync, readFileSync } from "node:fs";

/**
 * Pids whose parent is `pid`, read from /proc synchronously: a scan of every process takes a few
 * milliseconds this way, against hundreds with one awaited read per process, which would miss a
 * short-lived rustc.
 */
function childrenOf(pid: number): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat = "";
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // field 4 is the parent pid; the command name (field 2) may contain spaces, so split after its ")"
    const ppid = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1];
    if (ppid === String(pid)) found.push(entry);
  }
  return found;
}

/** Pids whose parent is `pid`, joined by spaces ("" when there are none). */
export async function childPids(pid: number): Promise<string> {
  return childrenOf(pid).join(" ");
}

/**
 * Runs `action` while sampling the children of `pid` every few milliseconds; resolves with the
 * action's result and every child pid seen meanwhile.
 */
export async function watchChildren<T>(pid: number, action: () => Promise<T>): Promise<{ result: T; seen: string[] }> {
  const seen = new Set<string>();
  const sample = (): void => {
    for (const child of childrenOf(pid)) seen.add(child);
  };
  const timer = setInterval(sample, 5);
  try {
    const result = await action();
    sample();
    return { result, seen: [...seen] };
  } finally {
    clearInterval(timer);
  }
}
