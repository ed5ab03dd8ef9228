/** Timestamps: fd_filestat_set_times and path_filestat_set_times, both on writable mounts only. */
import { execFileSync } from "node:child_process";
import * as nodeFs from "node:fs";
import { Errno, Fstflags, LOOKUP_SYMLINK_FOLLOW, Rights } from "../abi.js";
import { at, lstatAt, magicLink } from "../containment.js";
import type { WasiContext } from "../context.js";
import { requireRight } from "../descriptors.js";
import { errnoOf, GuestErrno } from "../errno.js";
import type { Preview1Calls } from "../types.js";

/** The calls of this family. */
export type TimesCalls = Pick<Preview1Calls, "fd_filestat_set_times" | "path_filestat_set_times">;

/** Every fstflag preview1 defines. */
const KNOWN_FSTFLAGS = Fstflags.ATIM | Fstflags.ATIM_NOW | Fstflags.MTIM | Fstflags.MTIM_NOW;
const NS_PER_US = 1000n;
const NS_PER_S = 1_000_000_000n;

/**
 * Sets timestamps per fstflags on `target` (a /proc/self/fd path). Node's utimes takes seconds as a double
 * and libuv truncates them to microseconds, and it cannot leave one timestamp unchanged (UTIME_OMIT). So a
 * nanosecond value, or a single timestamp, goes through coreutils `touch` (utimensat with UTIME_OMIT) on the
 * same /proc path: the only way Node 20 has to set them exactly, and only guests asking for that pay a spawn.
 */
function setTimes(target: string, noFollow: boolean, current: () => nodeFs.BigIntStats, atim: bigint, mtim: bigint, flags: number): void {
  if (
    ((flags & Fstflags.ATIM) !== 0 && (flags & Fstflags.ATIM_NOW) !== 0) ||
    ((flags & Fstflags.MTIM) !== 0 && (flags & Fstflags.MTIM_NOW) !== 0) ||
    (flags & ~KNOWN_FSTFLAGS) !== 0
  ) {
    throw new GuestErrno(Errno.INVAL);
  }
  const setA = (flags & (Fstflags.ATIM | Fstflags.ATIM_NOW)) !== 0;
  const setM = (flags & (Fstflags.MTIM | Fstflags.MTIM_NOW)) !== 0;
  if (!setA && !setM) return;
  const subMicrosecond =
    ((flags & Fstflags.ATIM) !== 0 && atim % NS_PER_US !== 0n) || ((flags & Fstflags.MTIM) !== 0 && mtim % NS_PER_US !== 0n);
  if (setA && setM && !subMicrosecond) {
    const now = Date.now() / 1000;
    const a = (flags & Fstflags.ATIM_NOW) !== 0 ? now : Number(atim / NS_PER_US) / 1e6;
    const m = (flags & Fstflags.MTIM_NOW) !== 0 ? now : Number(mtim / NS_PER_US) / 1e6;
    try {
      if (noFollow) nodeFs.lutimesSync(target, a, m);
      else nodeFs.utimesSync(target, a, m);
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
    return;
  }
  current(); // surfaces ENOENT and friends with the right errno before spawning anything
  const stamp = (ns: bigint): string => `@${ns / NS_PER_S}.${(ns % NS_PER_S).toString().padStart(9, "0")}`;
  const touch = (which: "-a" | "-m", now: boolean, ns: bigint): void => {
    const args = [
      "-c",
      which,
      ...(noFollow ? ["-h"] : []),
      ...(now ? [] : ["-d", stamp(ns)]),
      "--",
      target.replace("/proc/self/", `/proc/${process.pid}/`),
    ];
    try {
      execFileSync("touch", args, { stdio: "ignore" });
    } catch {
      throw new GuestErrno(Errno.ACCES);
    }
  };
  if (setA) touch("-a", (flags & Fstflags.ATIM_NOW) !== 0, atim);
  if (setM) touch("-m", (flags & Fstflags.MTIM_NOW) !== 0, mtim);
}

/** fd_filestat_set_times and path_filestat_set_times. */
export function timesCalls(ctx: WasiContext): TimesCalls {
  const { fds, containment } = ctx;
  return {
    fd_filestat_set_times: (fd, atim, mtim, fstflags) => {
      const d = fds.get(fd);
      if (d.kind !== "dir" && d.kind !== "file") return Errno.NOTCAPABLE;
      ctx.requireWriteRight("fd_filestat_set_times", d, Rights.FD_FILESTAT_SET_TIMES);
      // The magic link, followed, is exactly the file we hold.
      containment.mutate("fd_filestat_set_times", d, () =>
        setTimes(magicLink(d.hostFd), false, () => nodeFs.fstatSync(d.hostFd, { bigint: true }), atim, mtim, fstflags),
      );
      return Errno.SUCCESS;
    },
    path_filestat_set_times: (fd, lookupflags, pathPtr, pathLen, atim, mtim, fstflags) => {
      const d = fds.fsEntry(fd);
      const path = ctx.readPath(pathPtr, pathLen);
      ctx.requireWritable("path_filestat_set_times", d, path);
      requireRight(d, Rights.PATH_FILESTAT_SET_TIMES);
      // Never follows into the host: a final symlink, if followed, was expanded by the walk.
      const follow = (lookupflags & LOOKUP_SYMLINK_FOLLOW) !== 0;
      return containment.shared("path_filestat_set_times", d, path, () =>
        containment.withPath("path_filestat_set_times", d, path, follow, (r) => {
          setTimes(at(r.dirFd, r.name), true, () => lstatAt(r), atim, mtim, fstflags);
          return Errno.SUCCESS;
        }),
      );
    },
  };
}
