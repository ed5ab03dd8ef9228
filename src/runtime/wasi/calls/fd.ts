/**
 * The fd_* calls on an open descriptor: reads, writes, positions, status, sizes, syncing, closing. Stdio is
 * served here too, from the same table: each call's first line names the errno it answers for the kinds it
 * does not serve.
 */
import * as nodeFs from "node:fs";
import { NAMESPACE_LOCK_WRITE_CHUNK_BYTES } from "../../../limits.js";
import { Errno, Fdflags, FILESTAT_SIZE, Filetype, Rights, STDIO_RIGHTS, Whence } from "../abi.js";
import { insideMount, magicLink } from "../containment.js";
import { OutputLimit, type WasiContext } from "../context.js";
import { closeHostFd, requireRight, type FileDescriptor } from "../descriptors.js";
import { errnoOf, GuestErrno } from "../errno.js";
import type { GuestBuffers } from "../guest-memory.js";
import type { Preview1Calls, Ptr } from "../types.js";

const { O_APPEND, O_NONBLOCK } = nodeFs.constants;

/** The calls of this family. */
export type FdCalls = Pick<
  Preview1Calls,
  | "fd_read"
  | "fd_write"
  | "fd_pread"
  | "fd_pwrite"
  | "fd_seek"
  | "fd_tell"
  | "fd_fdstat_get"
  | "fd_fdstat_set_flags"
  | "fd_fdstat_set_rights"
  | "fd_filestat_get"
  | "fd_filestat_set_size"
  | "fd_advise"
  | "fd_allocate"
  | "fd_datasync"
  | "fd_sync"
  | "fd_close"
  | "fd_renumber"
>;

/** Rust's std prints this to stderr right before aborting on a failed allocation. */
const ALLOC_FAILURE_MARKER = "memory allocation of ";
/** A stderr write longer than this is not the allocation-failure message. */
const ALLOC_FAILURE_MESSAGE_MAX_BYTES = 512;
/** Output pieces up to this size are copied byte by byte rather than through a view. */
const SHORT_COPY_BYTES = 16;
/** fd_advise's largest advice value (NOREUSE). */
const MAX_ADVICE = 5;
/** Every fdflag a guest may set. */
const KNOWN_FDFLAGS = Fdflags.APPEND | Fdflags.NONBLOCK | Fdflags.DSYNC | Fdflags.RSYNC | Fdflags.SYNC;
const MAX_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

/** fd_* calls. */
export function fdCalls(ctx: WasiContext): FdCalls {
  const { mem, fds, containment } = ctx;

  /** Writes to stdout or stderr: only what the cap keeps is copied out of the guest; past the cap the run ends. */
  const writeOutput = (stream: "stdout" | "stderr", iovs: Ptr, iovsLen: number, nwrittenOut: Ptr): number => {
    const list = mem.iovecs(iovs, iovsLen);
    mem.check(nwrittenOut, 4);
    const total = list.totalBytes;
    const cap = ctx.options.maxOutputBytes;
    const used = stream === "stdout" ? ctx.stdoutBytes : ctx.stderrBytes;
    const room = Math.max(0, cap - used);
    // A fresh buffer of exactly the kept bytes: posting a view of a larger buffer would copy all of it.
    const deliver = new Uint8Array(Math.min(total, room));
    const u8 = list.u8;
    for (let i = 0, pos = 0; i < list.count && pos < deliver.length; i++) {
      const ptr = list.ptr(i);
      const len = Math.min(list.len(i), deliver.length - pos);
      // Short pieces byte by byte: a view per piece costs more than the copy (floods of 1-byte writes).
      if (len <= SHORT_COPY_BYTES) for (let k = 0; k < len; k++) deliver[pos + k] = u8[ptr + k] as number;
      else deliver.set(u8.subarray(ptr, ptr + len), pos);
      pos += len;
    }
    if (stream === "stdout") {
      ctx.stdoutBytes += deliver.length;
      if (deliver.length > 0) ctx.options.onStdout(deliver);
    } else {
      ctx.stderrBytes += deliver.length;
      if (deliver.length > 0) ctx.options.onStderr(deliver);
      // std writes the marker as one piece of its message: shorter writes cannot hold it, and a flood of
      // them must not cost a Buffer each.
      if (
        deliver.length >= ALLOC_FAILURE_MARKER.length &&
        total < ALLOC_FAILURE_MESSAGE_MAX_BYTES &&
        !ctx.sawAllocFailure &&
        Buffer.from(deliver.buffer, deliver.byteOffset, deliver.length).includes(ALLOC_FAILURE_MARKER)
      ) {
        ctx.sawAllocFailure = true;
      }
    }
    if (total > room) ctx.end(new OutputLimit(`${stream} exceeded its limit of ${cap} bytes`));
    mem.setU32(nwrittenOut, total);
    return Errno.SUCCESS;
  };

  /** Reads stdin, which is known in full up front. */
  const readStdin = (iovs: Ptr, iovsLen: number, nreadOut: Ptr): number => {
    const stdin = ctx.options.stdin;
    // Every buffer is checked before any input is consumed, so a failed read loses nothing.
    const list = mem.iovecs(iovs, iovsLen);
    mem.check(nreadOut, 4);
    let n = 0;
    for (let i = 0; i < list.count && ctx.stdinPos < stdin.length; i++) {
      const buf = list.at(i);
      const take = Math.min(buf.length, stdin.length - ctx.stdinPos);
      buf.set(stdin.subarray(ctx.stdinPos, ctx.stdinPos + take));
      ctx.stdinPos += take;
      n += take;
    }
    mem.setU32(nreadOut, n);
    return Errno.SUCCESS;
  };

  const readInto = (d: FileDescriptor, list: GuestBuffers, position: number): number => {
    let n = 0;
    for (let i = 0; i < list.count; i++) {
      const buf = list.at(i);
      if (buf.length === 0) continue;
      const got = nodeFs.readSync(d.hostFd, buf, 0, buf.length, position + n);
      n += got;
      if (got < buf.length) break;
    }
    return n;
  };

  /**
   * Writes the iovecs in pieces of at most NAMESPACE_LOCK_WRITE_CHUNK_BYTES, each under the namespace lock and
   * only while the file is still inside its mount, so one large write never holds up other guests' renames for
   * long. Refused after some bytes went out, it reports the short count (the guest's next write is refused).
   */
  const writeFrom = (operation: string, d: FileDescriptor, list: GuestBuffers, position: number | null): number => {
    const total = list.totalBytes;
    ctx.chargeWrite(operation, d, total);
    let n = 0;
    for (let i = 0; i < list.count; i++) {
      const buf = list.at(i);
      let off = 0;
      while (off < buf.length) {
        const len = Math.min(buf.length - off, NAMESPACE_LOCK_WRITE_CHUNK_BYTES);
        try {
          off += containment.mutate(operation, d, () =>
            nodeFs.writeSync(d.hostFd, buf, off, len, position === null ? null : position + n + off),
          );
        } catch (e: unknown) {
          // Charged in full above: give back what was never written.
          ctx.refundWrite(total - (n + off));
          if (n + off > 0 && e instanceof GuestErrno) return n + off;
          throw e;
        }
      }
      n += buf.length;
    }
    return n;
  };

  /** Node has no fcntl(F_SETFL): toggle O_APPEND by reopening the very file we hold through its /proc magic link. */
  const reopen = (d: FileDescriptor, append: boolean): void => {
    let fd: number;
    try {
      fd = nodeFs.openSync(magicLink(d.hostFd), d.access | O_NONBLOCK | (append ? O_APPEND : 0));
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
    if (!insideMount(fd, d.mount)) {
      closeHostFd(fd);
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    closeHostFd(d.hostFd);
    d.hostFd = fd;
  };

  const offsetOf = (offset: bigint): number => {
    if (offset > MAX_OFFSET) throw new GuestErrno(Errno.INVAL);
    return Number(offset);
  };

  /** fd_sync and fd_datasync: nothing of ours can be dirty on a read-only mount. */
  const sync = (fd: number, how: (hostFd: number) => void): number => {
    const d = fds.get(fd);
    if (d.kind !== "dir" && d.kind !== "file") return Errno.INVAL;
    if (d.mount.writable) how(d.hostFd);
    return Errno.SUCCESS;
  };

  return {
    fd_write: (fd, iovs, iovsLen, nwrittenOut) => {
      const d = fds.get(fd);
      if (d.kind === "stdout" || d.kind === "stderr") return writeOutput(d.kind, iovs, iovsLen, nwrittenOut);
      const f = fds.file(fd, { stdio: Errno.BADF, other: Errno.BADF });
      ctx.requireWriteRight("fd_write", f, Rights.FD_WRITE);
      const list = mem.iovecs(iovs, iovsLen);
      mem.check(nwrittenOut, 4);
      let n: number;
      if ((f.fdflags & Fdflags.APPEND) !== 0) {
        // The host fd has O_APPEND, so concurrent appenders (another execution on the same mount) never interleave.
        n = writeFrom("fd_write", f, list, null);
        f.position = nodeFs.fstatSync(f.hostFd).size;
      } else {
        n = writeFrom("fd_write", f, list, f.position);
        f.position += n;
      }
      mem.setU32(nwrittenOut, n);
      return Errno.SUCCESS;
    },
    fd_read: (fd, iovs, iovsLen, nreadOut) => {
      if (fds.get(fd).kind === "stdin") return readStdin(iovs, iovsLen, nreadOut);
      const f = fds.file(fd, { stdio: Errno.BADF, other: Errno.ISDIR });
      requireRight(f, Rights.FD_READ, Errno.BADF);
      const list = mem.iovecs(iovs, iovsLen);
      mem.check(nreadOut, 4);
      const n = readInto(f, list, f.position);
      f.position += n;
      mem.setU32(nreadOut, n);
      return Errno.SUCCESS;
    },
    fd_pread: (fd, iovs, iovsLen, offset, nreadOut) => {
      const f = fds.file(fd, { stdio: Errno.SPIPE, other: Errno.ISDIR });
      requireRight(f, Rights.FD_READ, Errno.BADF);
      const at = offsetOf(offset);
      const list = mem.iovecs(iovs, iovsLen);
      mem.check(nreadOut, 4);
      mem.setU32(nreadOut, readInto(f, list, at));
      return Errno.SUCCESS;
    },
    fd_pwrite: (fd, iovs, iovsLen, offset, nwrittenOut) => {
      const f = fds.file(fd, { stdio: Errno.SPIPE, other: Errno.ISDIR });
      ctx.requireWriteRight("fd_pwrite", f, Rights.FD_WRITE);
      const at = offsetOf(offset);
      const list = mem.iovecs(iovs, iovsLen);
      mem.check(nwrittenOut, 4);
      // With O_APPEND, Linux pwrite appends regardless of the offset; POSIX allows either.
      mem.setU32(nwrittenOut, writeFrom("fd_pwrite", f, list, at));
      return Errno.SUCCESS;
    },
    fd_seek: (fd, offset, whence, out) => {
      const f = fds.file(fd, { stdio: Errno.SPIPE, other: Errno.BADF });
      let base: number;
      if (whence === Whence.SET) base = 0;
      else if (whence === Whence.CUR) base = f.position;
      else if (whence === Whence.END) base = nodeFs.fstatSync(f.hostFd).size;
      else return Errno.INVAL;
      const next = BigInt(base) + offset;
      if (next < 0n || next > MAX_OFFSET) return Errno.INVAL;
      mem.check(out, 8);
      f.position = Number(next);
      mem.setU64(out, next);
      return Errno.SUCCESS;
    },
    fd_tell: (fd, out) => {
      const f = fds.file(fd, { stdio: Errno.SPIPE, other: Errno.BADF });
      mem.setU64(out, BigInt(f.position));
      return Errno.SUCCESS;
    },
    fd_fdstat_get: (fd, out) => {
      const d = fds.get(fd);
      mem.check(out, 24);
      if (d.kind === "dir" || d.kind === "file") {
        mem.setU8(out, d.kind === "dir" ? Filetype.DIRECTORY : Filetype.REGULAR_FILE);
        mem.setU8(out + 1, 0);
        mem.setU16(out + 2, d.fdflags);
        mem.setU32(out + 4, 0);
        mem.setU64(out + 8, d.rights.base);
        mem.setU64(out + 16, d.rights.inheriting);
        return Errno.SUCCESS;
      }
      // Our stdio are captured streams, never terminals: UNKNOWN (like a pipe) keeps isatty() false, so
      // guests do not write colour codes into output an agent will parse.
      mem.setU8(out, Filetype.UNKNOWN);
      mem.setU16(out + 2, 0);
      mem.setU64(out + 8, d.kind === "stdin" ? STDIO_RIGHTS & ~Rights.FD_WRITE : STDIO_RIGHTS & ~Rights.FD_READ);
      mem.setU64(out + 16, 0n);
      return Errno.SUCCESS;
    },
    fd_fdstat_set_flags: (fd, flags) => {
      const d = fds.get(fd);
      if (d.kind !== "dir" && d.kind !== "file") return flags === 0 ? Errno.SUCCESS : Errno.NOTSUP;
      if ((flags & ~KNOWN_FDFLAGS) !== 0) return Errno.INVAL;
      requireRight(d, Rights.FD_FDSTAT_SET_FLAGS);
      // APPEND is emulated; the sync flags are accepted (writes are synchronous calls anyway).
      if (d.kind === "file" && ((flags ^ d.fdflags) & Fdflags.APPEND) !== 0) reopen(d, (flags & Fdflags.APPEND) !== 0);
      d.fdflags = flags & ~Fdflags.NONBLOCK;
      return Errno.SUCCESS;
    },
    fd_fdstat_set_rights: (fd, base, inheriting) => {
      const d = fds.get(fd);
      if (d.kind !== "dir" && d.kind !== "file") return Errno.SUCCESS;
      // Rights may only shrink.
      if ((base & ~d.rights.base) !== 0n || (inheriting & ~d.rights.inheriting) !== 0n) return Errno.NOTCAPABLE;
      d.rights.base = base;
      d.rights.inheriting = inheriting;
      return Errno.SUCCESS;
    },
    fd_filestat_get: (fd, out) => {
      const d = fds.get(fd);
      if (d.kind !== "dir" && d.kind !== "file") {
        mem.zero(out, FILESTAT_SIZE);
        mem.setU8(out + 16, Filetype.UNKNOWN);
        return Errno.SUCCESS;
      }
      requireRight(d, Rights.FD_FILESTAT_GET, Errno.BADF);
      mem.check(out, FILESTAT_SIZE);
      writeFilestat(ctx, out, nodeFs.fstatSync(d.hostFd, { bigint: true }));
      return Errno.SUCCESS;
    },
    fd_filestat_set_size: (fd, size) => {
      const f = fds.file(fd, { stdio: Errno.INVAL, other: Errno.BADF });
      ctx.requireWriteRight("fd_filestat_set_size", f, Rights.FD_FILESTAT_SET_SIZE);
      if (size > MAX_OFFSET) return Errno.FBIG;
      containment.mutate("fd_filestat_set_size", f, () => {
        ctx.chargeWrite("fd_filestat_set_size", f, Number(size) - nodeFs.fstatSync(f.hostFd).size);
        nodeFs.ftruncateSync(f.hostFd, Number(size));
      });
      return Errno.SUCCESS;
    },
    fd_advise: (fd, _offset, _len, advice) => {
      fds.file(fd, { stdio: Errno.SPIPE, other: Errno.BADF });
      // Advisory only: validated and accepted.
      return advice > MAX_ADVICE ? Errno.INVAL : Errno.SUCCESS;
    },
    fd_allocate: (fd, offset, len) => {
      const f = fds.file(fd, { stdio: Errno.NOTSUP, other: Errno.BADF });
      ctx.requireWriteRight("fd_allocate", f, Rights.FD_ALLOCATE);
      const end = offset + len;
      if (end > MAX_OFFSET) return Errno.FBIG;
      // Node has no fallocate, so extend with ftruncate (the same visible size).
      containment.mutate("fd_allocate", f, () => {
        const size = nodeFs.fstatSync(f.hostFd).size;
        if (Number(end) > size) {
          ctx.chargeWrite("fd_allocate", f, Number(end) - size);
          nodeFs.ftruncateSync(f.hostFd, Number(end));
        }
      });
      return Errno.SUCCESS;
    },
    fd_datasync: (fd) => sync(fd, nodeFs.fdatasyncSync),
    fd_sync: (fd) => sync(fd, nodeFs.fsyncSync),
    fd_close: (fd) => {
      fds.close(fd);
      return Errno.SUCCESS;
    },
    fd_renumber: (from, to) => {
      fds.renumber(from, to);
      return Errno.SUCCESS;
    },
  };
}

/** Writes a preview1 filestat for `st` at `out` (checked by the caller or here). */
export function writeFilestat(ctx: WasiContext, out: Ptr, st: nodeFs.BigIntStats): void {
  const mem = ctx.mem;
  mem.zero(out, FILESTAT_SIZE);
  mem.setU64(out, st.dev);
  mem.setU64(out + 8, st.ino);
  mem.setU8(out + 16, filetypeOfMode(Number(st.mode)));
  mem.setU64(out + 24, st.nlink);
  mem.setU64(out + 32, st.size);
  mem.setU64(out + 40, st.atimeNs);
  mem.setU64(out + 48, st.mtimeNs);
  mem.setU64(out + 56, st.ctimeNs);
}

const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFSOCK } = nodeFs.constants;

/** The preview1 filetype of a host mode (a FIFO is UNKNOWN: preview1 has no name for it). */
export function filetypeOfMode(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return Filetype.REGULAR_FILE;
    case S_IFDIR:
      return Filetype.DIRECTORY;
    case S_IFLNK:
      return Filetype.SYMBOLIC_LINK;
    case S_IFCHR:
      return Filetype.CHARACTER_DEVICE;
    case S_IFBLK:
      return Filetype.BLOCK_DEVICE;
    case S_IFSOCK:
      return Filetype.SOCKET_STREAM;
    default:
      return Filetype.UNKNOWN;
  }
}
