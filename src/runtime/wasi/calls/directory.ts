/** Directories: listing (fd_readdir) and the preopens' announcements (fd_prestat_*). */
import * as nodeFs from "node:fs";
import { DIRENT_SIZE, Errno, Filetype, Rights } from "../abi.js";
import { magicLink } from "../containment.js";
import type { WasiContext } from "../context.js";
import { requireRight, type DirDescriptor, type Dirent } from "../descriptors.js";
import { GuestErrno } from "../errno.js";
import type { Preview1Calls } from "../types.js";
import { filetypeOfMode } from "./fd.js";

/** The calls of this family. */
export type DirectoryCalls = Pick<Preview1Calls, "fd_readdir" | "fd_prestat_get" | "fd_prestat_dir_name">;

/** preview1's preopentype for a directory (the only kind). */
const PREOPENTYPE_DIR = 0;

const encoder = new TextEncoder();

/** Every entry of `d`, `.` and `..` first, with real inode numbers and types. */
function listDir(d: DirDescriptor): Dirent[] {
  const names = nodeFs.readdirSync(magicLink(d.hostFd), { encoding: "buffer" });
  const self = nodeFs.fstatSync(d.hostFd, { bigint: true });
  let parentIno = self.ino;
  try {
    parentIno = nodeFs.statSync(`${magicLink(d.hostFd)}/..`, { bigint: true }).ino;
  } catch {
    // An unlinked directory has no parent to report; its own inode will do.
  }
  const entries: Dirent[] = [
    { name: encoder.encode("."), ino: self.ino, type: Filetype.DIRECTORY },
    { name: encoder.encode(".."), ino: parentIno, type: Filetype.DIRECTORY },
  ];
  for (const raw of names) {
    const name = new Uint8Array(raw.buffer, raw.byteOffset, raw.length);
    try {
      const st = nodeFs.lstatSync(`${magicLink(d.hostFd)}/${raw.toString("utf8")}`, { bigint: true });
      entries.push({ name, ino: st.ino, type: filetypeOfMode(Number(st.mode)) });
    } catch {
      // Removed between readdir and lstat (another writer): skip it as readdir would have a moment later.
    }
  }
  return entries;
}

/** fd_readdir and fd_prestat_*. */
export function directoryCalls(ctx: WasiContext): DirectoryCalls {
  const { mem, fds } = ctx;
  /** A preopen's descriptor; EBADF for anything else. */
  const preopen = (fd: number): { readonly name: Uint8Array } => {
    const d = fds.lookup(fd);
    if (d === undefined || d.kind !== "dir" || d.preopenName === undefined) throw new GuestErrno(Errno.BADF);
    return { name: d.preopenName };
  };
  return {
    fd_readdir: (fd, buf, bufLen, cookie, usedOut) => {
      const d = fds.dir(fd, { stdio: Errno.NOTDIR, other: Errno.NOTDIR });
      requireRight(d, Rights.FD_READDIR, Errno.BADF);
      mem.check(usedOut, 4);
      // Entries are snapshotted at cookie 0; cookie N resumes after the Nth entry.
      if (cookie === 0n || d.dirents === undefined) d.dirents = listDir(d);
      const entries = d.dirents;
      let used = 0;
      const header = new Uint8Array(DIRENT_SIZE);
      const hv = new DataView(header.buffer);
      // The cookie is a u64 that arrives as a signed i64: -1n would index entries[-1].
      const first = BigInt.asUintN(64, cookie) >= BigInt(entries.length) ? entries.length : Number(cookie);
      for (let i = first; i < entries.length && used < bufLen; i++) {
        const e = entries[i] as Dirent;
        hv.setBigUint64(0, BigInt(i + 1), true);
        hv.setBigUint64(8, e.ino, true);
        hv.setUint32(16, e.name.length, true);
        hv.setUint8(20, e.type);
        const h = Math.min(DIRENT_SIZE, bufLen - used);
        mem.write(buf + used, header.subarray(0, h));
        used += h;
        const n = Math.min(e.name.length, bufLen - used);
        mem.write(buf + used, e.name.subarray(0, n));
        used += n;
      }
      mem.setU32(usedOut, used);
      return Errno.SUCCESS;
    },
    fd_prestat_get: (fd, out) => {
      const { name } = preopen(fd);
      mem.check(out, 8);
      mem.setU32(out, PREOPENTYPE_DIR);
      mem.setU32(out + 4, name.length);
      return Errno.SUCCESS;
    },
    fd_prestat_dir_name: (fd, path, pathLen) => {
      const { name } = preopen(fd);
      if (pathLen < name.length) return Errno.NAMETOOLONG;
      mem.write(path, name);
      return Errno.SUCCESS;
    },
  };
}
