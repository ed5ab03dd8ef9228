import { execFileSync } from "node:child_process";
import * as nodeFs from "node:fs";
import { resolve as resolvePath } from "node:path";
import {
  DEFAULT_MAX_CREATED_ENTRIES,
  DEFAULT_MAX_WRITE_BYTES,
  MAX_OPEN_FDS,
  NAMESPACE_LOCK_WAIT_MS,
  NAMESPACE_LOCK_WRITE_CHUNK_BYTES,
} from "../../limits.js";
import {
  DIR_RIGHTS,
  DIRENT_SIZE,
  Errno,
  EventType,
  FILE_RIGHTS,
  FILESTAT_SIZE,
  Fdflags,
  Filetype,
  Fstflags,
  LOOKUP_SYMLINK_FOLLOW,
  MUTATING_RIGHTS,
  Oflags,
  Rights,
  Whence,
} from "./abi.js";
import { errnoOf } from "./errno.js";
import {
  acquireExclusive,
  acquireShared,
  namespaceLockHolder,
  processNamespaceLock,
  releaseExclusive,
  releaseShared,
} from "./namespace-lock.js";
import type { GuestMemory, WasiHostOptions } from "./host.js";

const {
  O_RDONLY,
  O_WRONLY,
  O_RDWR,
  O_CREAT,
  O_EXCL,
  O_TRUNC,
  O_APPEND,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_DSYNC,
  O_SYNC,
  S_IFMT,
  S_IFREG,
  S_IFDIR,
  S_IFLNK,
  S_IFCHR,
  S_IFBLK,
  S_IFIFO,
  S_IFSOCK,
} = nodeFs.constants;

/** Symlinks expanded in one resolution before it fails with ELOOP, as Linux's MAXSYMLINKS. */
const MAX_SYMLINK_EXPANSIONS = 40;
/** Longest guest path accepted, as Linux's PATH_MAX. */
const MAX_PATH_BYTES = 4096;
/** Times path_open retries an O_CREAT whose file another writer keeps removing and recreating under it. */
const MAX_CREATE_ATTEMPTS = 3;

/** A mount as served: its real (symlink-free) host root, fixed when the run starts. */
interface MountState {
  readonly guestPath: string;
  readonly realRoot: string;
  readonly writable: boolean;
}

/** One open guest descriptor (3 and up) and the host fd behind it. */
interface Descriptor {
  hostFd: number;
  readonly isDir: boolean;
  readonly mount: MountState;
  /** Guest-visible path, for denial records only. */
  readonly guestPath: string;
  rightsBase: bigint;
  rightsInheriting: bigint;
  fdflags: number;
  /** O_RDONLY / O_WRONLY / O_RDWR the host fd was opened with, to reopen it when APPEND is toggled. */
  readonly access: number;
  position: number;
  readonly preopenName: Uint8Array | undefined;
  dirents: Dirent[] | undefined;
}

interface Dirent {
  readonly name: Uint8Array;
  readonly ino: bigint;
  readonly type: number;
}

/** Where a guest path landed: a directory host fd we hold and one final component (or "." for the directory itself). */
interface Resolved {
  readonly dirFd: number;
  readonly owned: boolean;
  readonly name: string;
  readonly trailingSlash: boolean;
}

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** Host path that reaches `name` inside the directory open as `fd`, like openat(fd, name) would: the kernel resolves
 *  /proc/self/fd/N to the very directory we hold, wherever it now is, and `name` is a single component. */
function at(fd: number, name: string): string {
  // Even for "." keep a final component: /proc/self/fd/N itself is a (magic) symlink that O_NOFOLLOW refuses.
  return `/proc/self/fd/${fd}/${name}`;
}

function filetypeOfMode(mode: number): number {
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
    case S_IFIFO:
      return Filetype.UNKNOWN;
    default:
      return Filetype.UNKNOWN;
  }
}

/** An errno to hand back to the guest, raised inside a helper and caught at the import boundary. */
class GuestErrno {
  constructor(readonly errno: number) {}
}

/**
 * The filesystem half of the host: descriptors 3 and up, backed by the mounts.
 *
 * Escape-proofing: Node has no openat, so every lookup goes one component at a
 * time through `/proc/self/fd/<dir>/<name>` with O_NOFOLLOW (openat semantics on
 * the directory we actually hold), symlinks are expanded by us and never by the
 * kernel, `..` may not climb above the descriptor it started from, and every
 * directory we open is checked via readlink(/proc/self/fd/N) to really lie under
 * its mount's real root, so a directory swapped or moved mid-resolution is caught.
 */
export class WasiFs {
  private readonly fds: (Descriptor | undefined)[] = [];
  /** Which standard stream (0, 1, 2) a guest fd currently names; fd_renumber and fd_close can move or drop them. */
  private readonly stdioAt: (number | undefined)[] = [0, 1, 2];
  private openCount = 0;
  /** Bytes this run may still add to its writable mounts. */
  private writeBytesLeft: number;
  /** Files, directories and links this run may still create. */
  private createsLeft: number;
  /** Serializes every guest's renames against every guest's path operations and file mutations (see namespace-lock.ts). */
  private readonly lock: Int32Array;
  private readonly holder = namespaceLockHolder();

  constructor(
    private readonly options: WasiHostOptions,
    private readonly memory: () => GuestMemory,
  ) {
    this.writeBytesLeft = options.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES;
    this.createsLeft = options.maxCreatedEntries ?? DEFAULT_MAX_CREATED_ENTRIES;
    this.lock = options.namespaceLock ?? processNamespaceLock();
  }

  /** Opens one descriptor per mount (fds 3, 4, ...); returns an error text if a mount cannot be served. */
  openPreopens(): string | undefined {
    for (const m of this.options.mounts) {
      let realRoot: string;
      let fd: number;
      // hostPath is the real path the policy check resolved and approved, maybe long ago (the run may have
      // queued). Resolving it again would follow a symlink someone has since put on it, possibly to outside
      // every allowed root (red-team finding): open it, and serve it only if the kernel says the directory we
      // got is still at exactly that path.
      realRoot = resolvePath(m.hostPath);
      try {
        fd = nodeFs.openSync(realRoot, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      } catch (e: unknown) {
        return `mount ${m.guestPath}: cannot open host directory ${m.hostPath}: ${e instanceof Error ? e.message : String(e)}`;
      }
      let opened = "";
      try {
        opened = nodeFs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        // Unreadable: treated as changed below.
      }
      if (opened !== realRoot) {
        this.closeHost(fd);
        return `mount ${m.guestPath}: host directory ${m.hostPath} has changed since the policy was checked`;
      }
      const mount: MountState = { guestPath: m.guestPath, realRoot, writable: m.writable };
      const rights = m.writable ? DIR_RIGHTS : DIR_RIGHTS & ~MUTATING_RIGHTS;
      const inheriting = m.writable ? DIR_RIGHTS | FILE_RIGHTS : (DIR_RIGHTS | FILE_RIGHTS) & ~MUTATING_RIGHTS;
      this.install({
        hostFd: fd,
        isDir: true,
        mount,
        guestPath: m.guestPath,
        rightsBase: rights,
        rightsInheriting: inheriting,
        fdflags: 0,
        access: O_RDONLY,
        position: 0,
        preopenName: encoder.encode(m.guestPath),
        dirents: undefined,
      });
    }
    return undefined;
  }

  /** Closes every host fd this run opened. */
  closeAll(): void {
    for (let i = 0; i < this.fds.length; i++) {
      const d = this.fds[i];
      if (d !== undefined) this.closeHost(d.hostFd);
    }
    this.fds.length = 0;
    this.openCount = 0;
  }

  /** Whether `fd` names an open descriptor (stdio included). */
  isOpen(fd: number): boolean {
    return this.stdioAt[fd] !== undefined || this.fds[fd] !== undefined;
  }

  /** The standard stream (0 stdin, 1 stdout, 2 stderr) guest `fd` names, or -1. */
  stdioOf(fd: number): number {
    return this.stdioAt[fd] ?? -1;
  }

  /** poll_oneoff readiness of a file descriptor: regular files never block. */
  readiness(fd: number, type: number): { error: number; nbytes: bigint; flags: number } {
    const d = this.fds[fd];
    if (d === undefined) return { error: Errno.BADF, nbytes: 0n, flags: 0 };
    const need = type === EventType.FD_READ ? Rights.FD_READ : Rights.FD_WRITE;
    if (d.isDir || (d.rightsBase & need) === 0n) return { error: Errno.BADF, nbytes: 0n, flags: 0 };
    let nbytes = 0n;
    if (type === EventType.FD_READ) {
      try {
        nbytes = BigInt(Math.max(0, nodeFs.fstatSync(d.hostFd).size - d.position));
      } catch (e: unknown) {
        return { error: errnoOf(e), nbytes: 0n, flags: 0 };
      }
    }
    return { error: Errno.SUCCESS, nbytes, flags: 0 };
  }

  // ---- descriptor bookkeeping -------------------------------------------------------------

  private install(d: Descriptor): number {
    let fd = 3;
    while (this.fds[fd] !== undefined || this.stdioAt[fd] !== undefined) fd++;
    this.fds[fd] = d;
    this.openCount++;
    return fd;
  }

  private closeHost(hostFd: number): void {
    try {
      nodeFs.closeSync(hostFd);
    } catch {
      // Closing can only fail for an fd that is already gone; nothing is left to release.
    }
  }

  /** Opens `path` with O_NOFOLLOW and records it; throws GuestErrno on failure. */
  private openHost(path: string, flags: number, mode?: number): number {
    let fd: number;
    try {
      fd = nodeFs.openSync(path, flags | O_NOFOLLOW, mode);
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
    return fd;
  }

  /** The kernel's view of what `fd` really is must lie under the mount's real root. */
  private insideMount(fd: number, mount: MountState): boolean {
    let real: string;
    try {
      real = nodeFs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return false;
    }
    const root = mount.realRoot;
    return real === root || real.startsWith(root === "/" ? "/" : `${root}/`);
  }

  private deny(operation: string, d: Descriptor, path: string, reason: string): void {
    const base = d.guestPath.endsWith("/") ? d.guestPath : `${d.guestPath}/`;
    const guestPath = path === "" ? d.guestPath : path.startsWith("/") ? path : `${base}${path}`;
    this.options.onDenial({ operation, path: guestPath, reason });
  }

  /**
   * Takes `bytes` from the run's write quota, or refuses the whole operation with EDQUOT and a denial:
   * writable mounts may share a filesystem with the module cache and other callers' data.
   */
  private chargeWrite(operation: string, d: Descriptor, bytes: number): void {
    if (bytes <= 0) return;
    if (bytes > this.writeBytesLeft) {
      const quota = this.options.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES;
      this.deny(operation, d, "", `the run's write quota of ${quota} bytes (max_write_bytes) would be exceeded`);
      throw new GuestErrno(Errno.DQUOT);
    }
    this.writeBytesLeft -= bytes;
  }

  /** Counts one new file, directory or link, or refuses it with EDQUOT and a denial past the run's allowance. */
  private chargeCreate(operation: string, d: Descriptor, path: string): void {
    if (this.createsLeft <= 0) {
      const allowed = this.options.maxCreatedEntries ?? DEFAULT_MAX_CREATED_ENTRIES;
      this.deny(operation, d, path, `the run may create at most ${allowed} files, directories and links`);
      throw new GuestErrno(Errno.DQUOT);
    }
    this.createsLeft--;
  }

  private get(fd: number): Descriptor {
    const d = this.fds[fd];
    if (d === undefined) throw new GuestErrno(Errno.BADF);
    return d;
  }

  /** Fails with EPERM (and records a denial) when a mutating call targets a read-only mount. */
  private requireWritable(operation: string, d: Descriptor, path: string): void {
    if (!d.mount.writable) {
      this.deny(operation, d, path, `mount ${d.mount.guestPath} is read-only`);
      throw new GuestErrno(Errno.PERM);
    }
  }

  private requireRights(d: Descriptor, rights: bigint, errno: number = Errno.NOTCAPABLE): void {
    if ((d.rightsBase & rights) !== rights) throw new GuestErrno(errno);
  }

  private readPath(ptrArg: number, lenArg: number): string {
    // Wasm hands i32s to JS signed: as -1, a "4 GiB" length would pass the checks below and subarray() would
    // count from the end of memory. Take both as the u32s they are.
    const ptr = ptrArg >>> 0;
    const len = lenArg >>> 0;
    if (len > MAX_PATH_BYTES) throw new GuestErrno(Errno.NAMETOOLONG);
    const { u8 } = this.memory();
    if (ptr + len > u8.length) throw new GuestErrno(Errno.FAULT);
    let s: string;
    try {
      s = decoder.decode(u8.subarray(ptr, ptr + len));
    } catch {
      throw new GuestErrno(Errno.ILSEQ);
    }
    if (s.includes("\0")) throw new GuestErrno(Errno.INVAL);
    return s;
  }

  // ---- escape-proof resolution ---------------------------------------------------------------

  /**
   * Walks `path` from directory descriptor `d` and stops before the final component.
   * With `followFinal`, a final symlink is expanded too (its target must stay inside).
   */
  private resolve(operation: string, d: Descriptor, path: string, followFinal: boolean): Resolved {
    if (!d.isDir) throw new GuestErrno(Errno.NOTDIR);
    if (path === "") throw new GuestErrno(Errno.NOENT);
    // The starting directory is re-checked too: a held directory moved out of the mount (by another process,
    // or by the guest into another mount) would otherwise still take creates, truncates and unlinks of names
    // directly in it, since those act before the check on the opened file (red-team finding).
    if (!this.insideMount(d.hostFd, d.mount)) {
      this.deny(operation, d, path, "the directory descriptor was moved outside the mount");
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    if (path.startsWith("/")) {
      this.deny(operation, d, path, "absolute paths are not relative to any granted directory");
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    const trailingSlash = path.endsWith("/");
    // Pending components, last one first, so a symlink's target can be pushed in front of the rest.
    const pending = path
      .split("/")
      .filter((c) => c !== "")
      .reverse();
    let cur = d.hostFd;
    let owned = false;
    let depth = 0;
    let expansions = 0;
    const step = (next: number): void => {
      if (!this.insideMount(next, d.mount)) {
        this.closeHost(next);
        this.deny(operation, d, path, "a directory on the path resolved outside the mount (moved or swapped during resolution)");
        throw new GuestErrno(Errno.NOTCAPABLE);
      }
      if (owned) this.closeHost(cur);
      cur = next;
      owned = true;
    };
    const expand = (name: string): void => {
      if (++expansions > MAX_SYMLINK_EXPANSIONS) throw new GuestErrno(Errno.LOOP);
      let target: string;
      try {
        target = nodeFs.readlinkSync(at(cur, name));
      } catch (e: unknown) {
        throw new GuestErrno(errnoOf(e));
      }
      if (target.startsWith("/")) {
        this.deny(operation, d, path, `symlink ${name} points to absolute path ${target}, outside the mount`);
        throw new GuestErrno(Errno.NOTCAPABLE);
      }
      const parts = target.split("/").filter((c) => c !== "");
      if (target.endsWith("/") && pending.length === 0) parts.push(".");
      for (let i = parts.length - 1; i >= 0; i--) pending.push(parts[i] as string);
      if (parts.length === 0) pending.push(".");
    };
    try {
      for (;;) {
        const c = pending.pop();
        if (c === undefined) return { dirFd: cur, owned, name: ".", trailingSlash };
        const last = pending.length === 0;
        if (c === ".") {
          if (last) return { dirFd: cur, owned, name: ".", trailingSlash };
          continue;
        }
        if (c === "..") {
          if (depth === 0) {
            this.deny(operation, d, path, "`..` leads outside the granted directory");
            throw new GuestErrno(Errno.NOTCAPABLE);
          }
          step(this.openHost(at(cur, ".."), O_RDONLY | O_DIRECTORY));
          depth--;
          continue;
        }
        if (last && !followFinal && !trailingSlash) {
          return { dirFd: cur, owned, name: c, trailingSlash };
        }
        if (last) {
          let st: nodeFs.Stats;
          try {
            st = nodeFs.lstatSync(at(cur, c));
          } catch (e: unknown) {
            const errno = errnoOf(e);
            if (errno === Errno.NOENT) return { dirFd: cur, owned, name: c, trailingSlash };
            throw new GuestErrno(errno);
          }
          if (st.isSymbolicLink() && (followFinal || trailingSlash)) {
            expand(c);
            continue;
          }
          return { dirFd: cur, owned, name: c, trailingSlash };
        }
        let next: number;
        try {
          next = this.openHost(at(cur, c), O_RDONLY | O_DIRECTORY);
        } catch (e: unknown) {
          if (!(e instanceof GuestErrno) || (e.errno !== Errno.LOOP && e.errno !== Errno.NOTDIR)) throw e;
          let isLink = false;
          try {
            isLink = nodeFs.lstatSync(at(cur, c)).isSymbolicLink();
          } catch (e2: unknown) {
            throw new GuestErrno(errnoOf(e2));
          }
          if (!isLink) throw new GuestErrno(Errno.NOTDIR);
          expand(c);
          continue;
        }
        step(next);
        depth++;
      }
    } catch (e: unknown) {
      if (owned) this.closeHost(cur);
      throw e;
    }
  }

  private release(r: Resolved): void {
    if (r.owned) this.closeHost(r.dirFd);
  }

  /** Runs `body` with a resolved path and releases the intermediate directory however it ends. */
  private withPath<T>(operation: string, d: Descriptor, path: string, follow: boolean, body: (r: Resolved) => T): T {
    const r = this.resolve(operation, d, path, follow);
    try {
      return body(r);
    } finally {
      this.release(r);
    }
  }

  /**
   * Runs `body` (a whole path operation: walk, checks and act, or a check and a mutation through an open file) as
   * a reader of the namespace lock, so no guest's rename can move a directory between its checks and its act.
   */
  private shared<T>(operation: string, d: Descriptor, path: string, body: () => T): T {
    const slot = acquireShared(this.lock, this.holder, NAMESPACE_LOCK_WAIT_MS);
    if (slot < 0) this.lockTimedOut(operation, d, path);
    try {
      return body();
    } finally {
      releaseShared(this.lock, slot);
    }
  }

  /** Runs `body` (a rename) with the namespace lock alone: no other guest is between a check and an act meanwhile. */
  private exclusive<T>(operation: string, d: Descriptor, path: string, body: () => T): T {
    if (!acquireExclusive(this.lock, this.holder, NAMESPACE_LOCK_WAIT_MS)) this.lockTimedOut(operation, d, path);
    try {
      return body();
    } finally {
      releaseExclusive(this.lock, this.holder);
    }
  }

  private lockTimedOut(operation: string, d: Descriptor, path: string): never {
    this.deny(operation, d, path, `another run held the filesystem lock for over ${NAMESPACE_LOCK_WAIT_MS} ms`);
    throw new GuestErrno(Errno.BUSY);
  }

  /** Runs `body`, a mutation through the open file `d`, only while the file still lies under its mount. */
  private mutateFile<T>(operation: string, d: Descriptor, body: () => T): T {
    return this.shared(operation, d, "", () => {
      // Writes follow the file wherever it is moved; a guest's grant covers it only while it is in the mount.
      if (!this.insideMount(d.hostFd, d.mount)) {
        this.deny(operation, d, "", "it was moved outside the mount after it was opened");
        throw new GuestErrno(Errno.NOTCAPABLE);
      }
      return body();
    });
  }

  /**
   * After `r.name` was created in `r.dirFd`: if that directory no longer lies under the mount, remove what was
   * created (`undo`) and refuse. Guests' renames cannot get here (they wait for the lock); a process outside the
   * daemon can, by moving the directory away during the call. The undo acts in that same directory, which
   * whoever moved it can write to anyway (moving a directory to a new parent needs write access to it).
   */
  private keepCreatedInside(operation: string, d: Descriptor, path: string, r: Resolved, undo: () => void): void {
    if (this.insideMount(r.dirFd, d.mount)) return;
    try {
      undo();
    } catch {
      // Already gone or replaced: nothing of ours is left to remove.
    }
    this.deny(operation, d, path, "the directory was moved outside the mount during the call; what it created there was removed");
    throw new GuestErrno(Errno.NOTCAPABLE);
  }

  /** Removes `r.name` if it is still the inode `created` (what this call made), never something put there since. */
  private unlinkIfSame(r: Resolved, created: nodeFs.BigIntStats): void {
    const now = nodeFs.lstatSync(at(r.dirFd, r.name), { bigint: true });
    if (now.ino === created.ino && now.dev === created.dev) nodeFs.unlinkSync(at(r.dirFd, r.name));
  }

  /**
   * Opens the final component of a path_open. With O_CREAT but not O_EXCL it first tries O_EXCL, so it knows
   * whether this call created the file (only then may a refusal remove it); the kernel's answers stay those of
   * the single open (EISDIR for an existing directory, ELOOP for a symlink).
   */
  private openFinal(r: Resolved, flags: number): { fd: number; created: boolean } {
    const target = at(r.dirFd, r.name);
    if ((flags & O_CREAT) === 0 || (flags & O_EXCL) !== 0)
      return { fd: this.openHost(target, flags, 0o666), created: (flags & O_CREAT) !== 0 };
    for (let attempt = 0; ; attempt++) {
      try {
        return { fd: this.openHost(target, flags | O_EXCL, 0o666), created: true };
      } catch (e: unknown) {
        if (!(e instanceof GuestErrno) || e.errno !== Errno.EXIST) throw e;
      }
      let opened: number;
      try {
        opened = this.openHost(target, flags & ~O_CREAT);
      } catch (e: unknown) {
        // Removed between the two opens: create it after all (another writer keeps racing us: give up).
        if (e instanceof GuestErrno && e.errno === Errno.NOENT && attempt < MAX_CREATE_ATTEMPTS) continue;
        throw e;
      }
      if (nodeFs.fstatSync(opened).isDirectory()) {
        this.closeHost(opened);
        throw new GuestErrno(Errno.ISDIR);
      }
      return { fd: opened, created: false };
    }
  }

  /** Turns thrown GuestErrno/Node errors into an errno for the guest. */
  private guard(body: () => number): number {
    try {
      return body();
    } catch (e: unknown) {
      if (e instanceof GuestErrno) return e.errno;
      if (e instanceof Error && "code" in e) return errnoOf(e);
      throw e;
    }
  }

  private lstatAt(r: Resolved): nodeFs.BigIntStats {
    try {
      return nodeFs.lstatSync(at(r.dirFd, r.name), { bigint: true });
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
  }

  private exists(r: Resolved): boolean {
    try {
      nodeFs.lstatSync(at(r.dirFd, r.name));
      return true;
    } catch {
      return false;
    }
  }

  private writeFilestat(out: number, st: nodeFs.BigIntStats): void {
    const { view, u8 } = this.memory();
    u8.fill(0, out, out + FILESTAT_SIZE);
    view.setBigUint64(out, st.dev, true);
    view.setBigUint64(out + 8, st.ino, true);
    view.setUint8(out + 16, filetypeOfMode(Number(st.mode)));
    view.setBigUint64(out + 24, st.nlink, true);
    view.setBigUint64(out + 32, st.size, true);
    view.setBigUint64(out + 40, st.atimeNs, true);
    view.setBigUint64(out + 48, st.mtimeNs, true);
    view.setBigUint64(out + 56, st.ctimeNs, true);
  }

  /**
   * Sets timestamps per fstflags on `target` (a /proc/self/fd path). Node's utimes goes through a double of
   * seconds and libuv rounds to microseconds, so nanosecond values, and "leave this one unchanged", are
   * delegated to coreutils touch (utimensat with UTIME_OMIT) on the same /proc path; that costs a process
   * spawn, which only guests setting sub-microsecond times or a single timestamp pay.
   */
  private setTimes(target: string, noFollow: boolean, current: () => nodeFs.BigIntStats, atim: bigint, mtim: bigint, flags: number): void {
    if (
      ((flags & Fstflags.ATIM) !== 0 && (flags & Fstflags.ATIM_NOW) !== 0) ||
      ((flags & Fstflags.MTIM) !== 0 && (flags & Fstflags.MTIM_NOW) !== 0) ||
      (flags & ~15) !== 0
    ) {
      throw new GuestErrno(Errno.INVAL);
    }
    const setA = (flags & (Fstflags.ATIM | Fstflags.ATIM_NOW)) !== 0;
    const setM = (flags & (Fstflags.MTIM | Fstflags.MTIM_NOW)) !== 0;
    if (!setA && !setM) return;
    const coarse = ((flags & Fstflags.ATIM) !== 0 && atim % 1000n !== 0n) || ((flags & Fstflags.MTIM) !== 0 && mtim % 1000n !== 0n);
    if (setA && setM && !coarse) {
      const now = Date.now() / 1000;
      const a = (flags & Fstflags.ATIM_NOW) !== 0 ? now : Number(atim / 1000n) / 1e6;
      const m = (flags & Fstflags.MTIM_NOW) !== 0 ? now : Number(mtim / 1000n) / 1e6;
      try {
        if (noFollow) nodeFs.lutimesSync(target, a, m);
        else nodeFs.utimesSync(target, a, m);
      } catch (e: unknown) {
        throw new GuestErrno(errnoOf(e));
      }
      return;
    }
    current(); // surfaces ENOENT and friends with the right errno before spawning anything
    const stamp = (ns: bigint): string => `@${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, "0")}`;
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

  // ---- fd_* ---------------------------------------------------------------------------------------

  /**
   * Checks every iovec lies in guest memory (EFAULT before any I/O) and returns a function giving the i-th
   * buffer. Buffers are made one at a time: an array of them let 9*10^6 zero-length iovecs exhaust the
   * worker's heap (red-team finding). Pointers and counts are u32s that wasm hands to JS signed.
   */
  private iovecs(iovsArg: number, iovsLenArg: number): { count: number; at: (i: number) => Uint8Array } {
    const { view, u8 } = this.memory();
    const iovs = iovsArg >>> 0;
    const count = iovsLenArg >>> 0;
    if (iovs + count * 8 > u8.length) throw new GuestErrno(Errno.FAULT);
    for (let i = 0; i < count; i++) {
      if (view.getUint32(iovs + i * 8, true) + view.getUint32(iovs + i * 8 + 4, true) > u8.length) throw new GuestErrno(Errno.FAULT);
    }
    return {
      count,
      at: (i) => {
        const ptr = view.getUint32(iovs + i * 8, true);
        return u8.subarray(ptr, ptr + view.getUint32(iovs + i * 8 + 4, true));
      },
    };
  }

  private readInto(d: Descriptor, iovs: number, iovsLen: number, position: number): number {
    let n = 0;
    const list = this.iovecs(iovs, iovsLen);
    for (let i = 0; i < list.count; i++) {
      const buf = list.at(i);
      if (buf.length === 0) continue;
      const got = nodeFs.readSync(d.hostFd, buf, 0, buf.length, position + n);
      n += got;
      if (got < buf.length) break;
    }
    return n;
  }

  /**
   * Writes the iovecs in pieces of at most NAMESPACE_LOCK_WRITE_CHUNK_BYTES, each under the namespace lock and
   * only while the file is still inside its mount, so one large write never holds up other guests' renames for
   * long. Refused after some bytes went out, it reports the short count (the guest's next write is refused).
   */
  private writeFrom(operation: string, d: Descriptor, iovs: number, iovsLen: number, position: number | null): number {
    let n = 0;
    const list = this.iovecs(iovs, iovsLen);
    let total = 0;
    for (let i = 0; i < list.count; i++) total += list.at(i).length;
    this.chargeWrite(operation, d, total);
    for (let i = 0; i < list.count; i++) {
      const buf = list.at(i);
      let off = 0;
      while (off < buf.length) {
        const len = Math.min(buf.length - off, NAMESPACE_LOCK_WRITE_CHUNK_BYTES);
        try {
          off += this.mutateFile(operation, d, () =>
            nodeFs.writeSync(d.hostFd, buf, off, len, position === null ? null : position + n + off),
          );
        } catch (e: unknown) {
          // Charged in full above: give back what was never written.
          this.writeBytesLeft += total - (n + off);
          if (n + off > 0 && e instanceof GuestErrno) return n + off;
          throw e;
        }
      }
      n += buf.length;
    }
    return n;
  }

  /** fd_write on a file. */
  fd_write(fd: number, iovs: number, iovsLen: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      if ((d.rightsBase & Rights.FD_WRITE) === 0n) {
        if (!d.mount.writable) this.deny("fd_write", d, "", `mount ${d.mount.guestPath} is read-only`);
        return Errno.BADF;
      }
      let n: number;
      if ((d.fdflags & Fdflags.APPEND) !== 0) {
        // The host fd has O_APPEND, so concurrent appenders (another execution on the same mount) never interleave.
        n = this.writeFrom("fd_write", d, iovs, iovsLen, null);
        d.position = nodeFs.fstatSync(d.hostFd).size;
      } else {
        n = this.writeFrom("fd_write", d, iovs, iovsLen, d.position);
        d.position += n;
      }
      this.memory().view.setUint32(out, n, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_read on a file. */
  fd_read(fd: number, iovs: number, iovsLen: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.ISDIR;
      if ((d.rightsBase & Rights.FD_READ) === 0n) return Errno.BADF;
      const n = this.readInto(d, iovs, iovsLen, d.position);
      d.position += n;
      this.memory().view.setUint32(out, n, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_pread: read at an offset without moving the position. */
  fd_pread(fd: number, iovs: number, iovsLen: number, offset: bigint, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.ISDIR;
      if ((d.rightsBase & Rights.FD_READ) === 0n) return Errno.BADF;
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.INVAL;
      const n = this.readInto(d, iovs, iovsLen, Number(offset));
      this.memory().view.setUint32(out, n, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_pwrite: write at an offset without moving the position. */
  fd_pwrite(fd: number, iovs: number, iovsLen: number, offset: bigint, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.ISDIR;
      if ((d.rightsBase & Rights.FD_WRITE) === 0n) {
        if (!d.mount.writable) this.deny("fd_pwrite", d, "", `mount ${d.mount.guestPath} is read-only`);
        return Errno.BADF;
      }
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.INVAL;
      // With O_APPEND, Linux pwrite appends regardless of the offset; POSIX allows either.
      const n = this.writeFrom("fd_pwrite", d, iovs, iovsLen, Number(offset));
      this.memory().view.setUint32(out, n, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_seek: positions are kept by the host (Node has no lseek). */
  fd_seek(fd: number, offset: bigint, whence: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      let base: number;
      if (whence === Whence.SET) base = 0;
      else if (whence === Whence.CUR) base = d.position;
      else if (whence === Whence.END) base = nodeFs.fstatSync(d.hostFd).size;
      else return Errno.INVAL;
      const next = BigInt(base) + offset;
      if (next < 0n || next > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.INVAL;
      d.position = Number(next);
      this.memory().view.setBigUint64(out, next, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_tell. */
  fd_tell(fd: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      this.memory().view.setBigUint64(out, BigInt(d.position), true);
      return Errno.SUCCESS;
    });
  }

  /** fd_fdstat_get. */
  fd_fdstat_get(fd: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const { view } = this.memory();
      view.setUint8(out, d.isDir ? Filetype.DIRECTORY : Filetype.REGULAR_FILE);
      view.setUint8(out + 1, 0);
      view.setUint16(out + 2, d.fdflags, true);
      view.setUint32(out + 4, 0, true);
      view.setBigUint64(out + 8, d.rightsBase, true);
      view.setBigUint64(out + 16, d.rightsInheriting, true);
      return Errno.SUCCESS;
    });
  }

  /** fd_fdstat_set_flags: APPEND is emulated; the sync flags are accepted (writes are synchronous calls anyway). */
  fd_fdstat_set_flags(fd: number, flags: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (flags & ~(Fdflags.APPEND | Fdflags.NONBLOCK | Fdflags.DSYNC | Fdflags.RSYNC | Fdflags.SYNC)) return Errno.INVAL;
      this.requireRights(d, Rights.FD_FDSTAT_SET_FLAGS);
      if (!d.isDir && ((flags ^ d.fdflags) & Fdflags.APPEND) !== 0) this.reopen(d, (flags & Fdflags.APPEND) !== 0);
      d.fdflags = flags & ~Fdflags.NONBLOCK;
      return Errno.SUCCESS;
    });
  }

  /** Node has no fcntl(F_SETFL): toggle O_APPEND by reopening the very file we hold through its /proc magic link. */
  private reopen(d: Descriptor, append: boolean): void {
    let fd: number;
    try {
      fd = nodeFs.openSync(`/proc/self/fd/${d.hostFd}`, d.access | O_NONBLOCK | (append ? O_APPEND : 0));
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
    if (!this.insideMount(fd, d.mount)) {
      this.closeHost(fd);
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    this.closeHost(d.hostFd);
    d.hostFd = fd;
  }

  /** fd_fdstat_set_rights: rights may only shrink. */
  fd_fdstat_set_rights(fd: number, base: bigint, inheriting: bigint): number {
    return this.guard(() => {
      const d = this.get(fd);
      if ((base & ~d.rightsBase) !== 0n || (inheriting & ~d.rightsInheriting) !== 0n) return Errno.NOTCAPABLE;
      d.rightsBase = base;
      d.rightsInheriting = inheriting;
      return Errno.SUCCESS;
    });
  }

  /** fd_filestat_get. */
  fd_filestat_get(fd: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      this.requireRights(d, Rights.FD_FILESTAT_GET, Errno.BADF);
      this.writeFilestat(out, nodeFs.fstatSync(d.hostFd, { bigint: true }));
      return Errno.SUCCESS;
    });
  }

  /** fd_filestat_set_size (ftruncate). */
  fd_filestat_set_size(fd: number, size: bigint): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      if ((d.rightsBase & Rights.FD_FILESTAT_SET_SIZE) === 0n) {
        if (!d.mount.writable) this.deny("fd_filestat_set_size", d, "", `mount ${d.mount.guestPath} is read-only`);
        return Errno.BADF;
      }
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.FBIG;
      this.mutateFile("fd_filestat_set_size", d, () => {
        this.chargeWrite("fd_filestat_set_size", d, Number(size) - nodeFs.fstatSync(d.hostFd).size);
        nodeFs.ftruncateSync(d.hostFd, Number(size));
      });
      return Errno.SUCCESS;
    });
  }

  /** fd_filestat_set_times (futimes). */
  fd_filestat_set_times(fd: number, atim: bigint, mtim: bigint, flags: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if ((d.rightsBase & Rights.FD_FILESTAT_SET_TIMES) === 0n) {
        if (!d.mount.writable) this.deny("fd_filestat_set_times", d, "", `mount ${d.mount.guestPath} is read-only`);
        return Errno.BADF;
      }
      // The magic link, followed, is exactly the file we hold.
      this.mutateFile("fd_filestat_set_times", d, () =>
        this.setTimes(`/proc/self/fd/${d.hostFd}`, false, () => nodeFs.fstatSync(d.hostFd, { bigint: true }), atim, mtim, flags),
      );
      return Errno.SUCCESS;
    });
  }

  /** fd_advise: advisory only; validated and accepted. */
  fd_advise(fd: number, _offset: bigint, _len: bigint, advice: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      if (advice < 0 || advice > 5) return Errno.INVAL;
      return Errno.SUCCESS;
    });
  }

  /** fd_allocate: Node has no fallocate, so extend with ftruncate (same visible size). */
  fd_allocate(fd: number, offset: bigint, len: bigint): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (d.isDir) return Errno.BADF;
      if ((d.rightsBase & Rights.FD_ALLOCATE) === 0n) {
        if (!d.mount.writable) this.deny("fd_allocate", d, "", `mount ${d.mount.guestPath} is read-only`);
        return Errno.BADF;
      }
      const end = offset + len;
      if (end > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.FBIG;
      this.mutateFile("fd_allocate", d, () => {
        const size = nodeFs.fstatSync(d.hostFd).size;
        if (Number(end) > size) {
          this.chargeWrite("fd_allocate", d, Number(end) - size);
          nodeFs.ftruncateSync(d.hostFd, Number(end));
        }
      });
      return Errno.SUCCESS;
    });
  }

  /** fd_datasync. */
  fd_datasync(fd: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (!d.mount.writable) return Errno.SUCCESS; // nothing of ours can be dirty on a read-only mount
      nodeFs.fdatasyncSync(d.hostFd);
      return Errno.SUCCESS;
    });
  }

  /** fd_sync. */
  fd_sync(fd: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (!d.mount.writable) return Errno.SUCCESS;
      nodeFs.fsyncSync(d.hostFd);
      return Errno.SUCCESS;
    });
  }

  /** fd_close (preopens and stdio included, as wasmtime allows). */
  fd_close(fd: number): number {
    if (this.stdioAt[fd] !== undefined) {
      this.stdioAt[fd] = undefined;
      return Errno.SUCCESS;
    }
    const d = this.fds[fd];
    if (d === undefined) return Errno.BADF;
    this.fds[fd] = undefined;
    this.openCount--;
    this.closeHost(d.hostFd);
    return Errno.SUCCESS;
  }

  /** fd_renumber: `to` must be open; it is closed and replaced by `from`. */
  fd_renumber(from: number, to: number): number {
    if (!this.isOpen(from) || !this.isOpen(to)) return Errno.BADF;
    if (from === to) return Errno.SUCCESS;
    this.fd_close(to);
    this.stdioAt[to] = this.stdioAt[from];
    this.stdioAt[from] = undefined;
    const d = this.fds[from];
    if (d !== undefined) {
      this.fds[to] = d;
      this.fds[from] = undefined;
    }
    return Errno.SUCCESS;
  }

  /** fd_prestat_get. */
  fd_prestat_get(fd: number, out: number): number {
    const d = this.fds[fd];
    if (d === undefined || d.preopenName === undefined) return Errno.BADF;
    const { view } = this.memory();
    view.setUint32(out, 0, true);
    view.setUint32(out + 4, d.preopenName.length, true);
    return Errno.SUCCESS;
  }

  /** fd_prestat_dir_name. */
  fd_prestat_dir_name(fd: number, ptr: number, len: number): number {
    const d = this.fds[fd];
    if (d === undefined || d.preopenName === undefined) return Errno.BADF;
    if (len < d.preopenName.length) return Errno.NAMETOOLONG;
    this.memory().u8.set(d.preopenName, ptr);
    return Errno.SUCCESS;
  }

  private listDir(d: Descriptor): Dirent[] {
    const names = nodeFs.readdirSync(`/proc/self/fd/${d.hostFd}`, { encoding: "buffer" });
    const self = nodeFs.fstatSync(d.hostFd, { bigint: true });
    let parentIno = self.ino;
    try {
      parentIno = nodeFs.statSync(`/proc/self/fd/${d.hostFd}/..`, { bigint: true }).ino;
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
        const st = nodeFs.lstatSync(`/proc/self/fd/${d.hostFd}/${raw.toString("utf8")}`, { bigint: true });
        entries.push({ name, ino: st.ino, type: filetypeOfMode(Number(st.mode)) });
      } catch {
        // Removed between readdir and lstat (another writer): skip it as readdir would have a moment later.
      }
    }
    return entries;
  }

  /** fd_readdir: entries are snapshotted at cookie 0; cookie N resumes after the Nth entry. */
  fd_readdir(fd: number, buf: number, bufLen: number, cookie: bigint, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      if (!d.isDir) return Errno.NOTDIR;
      this.requireRights(d, Rights.FD_READDIR, Errno.BADF);
      if (cookie === 0n || d.dirents === undefined) d.dirents = this.listDir(d);
      const entries = d.dirents;
      const { view, u8 } = this.memory();
      let used = 0;
      const header = new Uint8Array(DIRENT_SIZE);
      const hv = new DataView(header.buffer);
      // The cookie is a u64 that arrives as a signed i64: -1n would index entries[-1] and crash the host.
      const first = BigInt.asUintN(64, cookie) >= BigInt(entries.length) ? entries.length : Number(cookie);
      for (let i = first; i < entries.length && used < bufLen; i++) {
        const e = entries[i] as Dirent;
        hv.setBigUint64(0, BigInt(i + 1), true);
        hv.setBigUint64(8, e.ino, true);
        hv.setUint32(16, e.name.length, true);
        hv.setUint8(20, e.type);
        const h = Math.min(DIRENT_SIZE, bufLen - used);
        u8.set(header.subarray(0, h), buf + used);
        used += h;
        const n = Math.min(e.name.length, bufLen - used);
        u8.set(e.name.subarray(0, n), buf + used);
        used += n;
      }
      view.setUint32(out, used, true);
      return Errno.SUCCESS;
    });
  }

  // ---- path_* -------------------------------------------------------------------------------------

  /** path_open. */
  path_open(
    fd: number,
    dirflags: number,
    pathPtr: number,
    pathLen: number,
    oflags: number,
    base: bigint,
    inheriting: bigint,
    fdflags: number,
    out: number,
  ): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireRights(d, Rights.PATH_OPEN);
      const wantWrite =
        (base & (Rights.FD_WRITE | Rights.FD_ALLOCATE | Rights.FD_FILESTAT_SET_SIZE)) !== 0n || (fdflags & Fdflags.APPEND) !== 0;
      const creates = (oflags & (Oflags.CREAT | Oflags.TRUNC)) !== 0;
      if (wantWrite || creates) this.requireWritable("path_open", d, path);
      if ((oflags & Oflags.CREAT) !== 0) this.requireRights(d, Rights.PATH_CREATE_FILE);
      if ((oflags & Oflags.TRUNC) !== 0) this.requireRights(d, Rights.PATH_FILESTAT_SET_SIZE);
      if (this.openCount >= MAX_OPEN_FDS) {
        this.deny("path_open", d, path, `open descriptor limit of ${MAX_OPEN_FDS} reached`);
        return Errno.MFILE;
      }
      const follow = (dirflags & LOOKUP_SYMLINK_FOLLOW) !== 0;
      return this.shared("path_open", d, path, () =>
        this.withPath("path_open", d, path, follow, (r) => {
          let flags = O_NONBLOCK; // never hang on a FIFO the mount may contain; regular files ignore it
          if ((oflags & Oflags.DIRECTORY) !== 0) flags |= O_DIRECTORY;
          if ((oflags & Oflags.CREAT) !== 0) flags |= O_CREAT;
          if ((oflags & Oflags.EXCL) !== 0) flags |= O_EXCL;
          if ((oflags & Oflags.TRUNC) !== 0) flags |= O_TRUNC;
          if ((fdflags & Fdflags.APPEND) !== 0) flags |= O_APPEND;
          if ((fdflags & Fdflags.DSYNC) !== 0) flags |= O_DSYNC;
          if ((fdflags & (Fdflags.SYNC | Fdflags.RSYNC)) !== 0) flags |= O_SYNC;
          const wantRead = (base & (Rights.FD_READ | Rights.FD_READDIR)) !== 0n;
          // A directory asked for with write rights gets EISDIR from the kernel, as POSIX wants.
          if (wantWrite || (oflags & Oflags.TRUNC) !== 0) flags |= wantRead ? O_RDWR : O_WRONLY;
          else flags |= O_RDONLY;
          if (r.trailingSlash && (oflags & Oflags.CREAT) !== 0) return Errno.ISDIR;
          if (r.trailingSlash) flags |= O_DIRECTORY;
          if ((oflags & Oflags.CREAT) !== 0 && !this.exists(r)) this.chargeCreate("path_open", d, path);
          let opened: { fd: number; created: boolean };
          try {
            opened = this.openFinal(r, flags);
          } catch (e: unknown) {
            // O_NOFOLLOW on a symlink says ELOOP; for a directory lookup, "not a directory" is the POSIX answer.
            if (e instanceof GuestErrno && e.errno === Errno.LOOP && (oflags & Oflags.DIRECTORY) !== 0) return Errno.NOTDIR;
            throw e;
          }
          let keep = false;
          try {
            if (!this.insideMount(opened.fd, d.mount)) {
              // Only a process outside the daemon can get here (guests' renames wait for the lock): see keepCreatedInside.
              if (opened.created) {
                try {
                  this.unlinkIfSame(r, nodeFs.fstatSync(opened.fd, { bigint: true }));
                } catch {
                  // Already gone or replaced: nothing of ours is left to remove.
                }
              }
              this.deny(
                "path_open",
                d,
                path,
                `the opened file lies outside the mount${opened.created ? "; the file it created there was removed" : ""}`,
              );
              return Errno.NOTCAPABLE;
            }
            const st = nodeFs.fstatSync(opened.fd);
            const isDir = st.isDirectory();
            if (!isDir && !st.isFile()) {
              this.deny("path_open", d, path, "only regular files and directories can be opened");
              return Errno.NOTCAPABLE;
            }
            const mask = (isDir ? DIR_RIGHTS : FILE_RIGHTS) & (d.mount.writable ? ~0n : ~MUTATING_RIGHTS);
            const joined = `${d.guestPath.endsWith("/") ? d.guestPath : `${d.guestPath}/`}${path}`;
            const newFd = this.install({
              hostFd: opened.fd,
              isDir,
              mount: d.mount,
              guestPath: joined,
              rightsBase: base & d.rightsInheriting & mask,
              rightsInheriting: inheriting & d.rightsInheriting,
              fdflags: fdflags & ~Fdflags.NONBLOCK,
              access: flags & (O_WRONLY | O_RDWR),
              position: 0,
              preopenName: undefined,
              dirents: undefined,
            });
            keep = true;
            this.memory().view.setUint32(out, newFd, true);
            return Errno.SUCCESS;
          } finally {
            if (!keep) this.closeHost(opened.fd);
          }
        }),
      );
    });
  }

  /** path_create_directory. */
  path_create_directory(fd: number, pathPtr: number, pathLen: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireWritable("path_create_directory", d, path);
      this.requireRights(d, Rights.PATH_CREATE_DIRECTORY);
      return this.shared("path_create_directory", d, path, () =>
        this.withPath("path_create_directory", d, path, false, (r) => {
          if (r.name === ".") return Errno.EXIST;
          this.chargeCreate("path_create_directory", d, path);
          nodeFs.mkdirSync(at(r.dirFd, r.name), 0o777);
          // rmdir removes only an empty directory: never anything someone put in its place.
          this.keepCreatedInside("path_create_directory", d, path, r, () => nodeFs.rmdirSync(at(r.dirFd, r.name)));
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_filestat_get. */
  path_filestat_get(fd: number, flags: number, pathPtr: number, pathLen: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireRights(d, Rights.PATH_FILESTAT_GET);
      return this.shared("path_filestat_get", d, path, () =>
        this.withPath("path_filestat_get", d, path, (flags & LOOKUP_SYMLINK_FOLLOW) !== 0, (r) => {
          const st = this.lstatAt(r);
          if (r.trailingSlash && !st.isDirectory()) return Errno.NOTDIR;
          this.writeFilestat(out, st);
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_filestat_set_times (never follows into the host: the final symlink, if followed, was expanded by us). */
  path_filestat_set_times(fd: number, flags: number, pathPtr: number, pathLen: number, atim: bigint, mtim: bigint, fst: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireWritable("path_filestat_set_times", d, path);
      this.requireRights(d, Rights.PATH_FILESTAT_SET_TIMES);
      return this.shared("path_filestat_set_times", d, path, () =>
        this.withPath("path_filestat_set_times", d, path, (flags & LOOKUP_SYMLINK_FOLLOW) !== 0, (r) => {
          this.setTimes(at(r.dirFd, r.name), true, () => this.lstatAt(r), atim, mtim, fst);
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_link: hard links only within granted, writable mounts. */
  path_link(oldFd: number, oldFlags: number, oldPtr: number, oldLen: number, newFd: number, newPtr: number, newLen: number): number {
    return this.guard(() => {
      const od = this.get(oldFd);
      const nd = this.get(newFd);
      const oldPath = this.readPath(oldPtr, oldLen);
      const newPath = this.readPath(newPtr, newLen);
      this.requireWritable("path_link", od, oldPath);
      this.requireWritable("path_link", nd, newPath);
      this.requireRights(od, Rights.PATH_LINK_SOURCE);
      this.requireRights(nd, Rights.PATH_LINK_TARGET);
      return this.shared("path_link", nd, newPath, () =>
        this.withPath("path_link", od, oldPath, (oldFlags & LOOKUP_SYMLINK_FOLLOW) !== 0, (ro) =>
          this.withPath("path_link", nd, newPath, false, (rn) => {
            const st = this.lstatAt(ro);
            if (st.isDirectory()) return Errno.PERM;
            if (ro.trailingSlash) return Errno.NOTDIR;
            if (rn.trailingSlash) return this.exists(rn) ? Errno.EXIST : Errno.NOENT;
            this.chargeCreate("path_link", nd, newPath);
            nodeFs.linkSync(at(ro.dirFd, ro.name), at(rn.dirFd, rn.name));
            this.keepCreatedInside("path_link", nd, newPath, rn, () => this.unlinkIfSame(rn, st));
            return Errno.SUCCESS;
          }),
        ),
      );
    });
  }

  /** path_readlink: the target text, truncated to the buffer like readlink(2). */
  path_readlink(fd: number, pathPtr: number, pathLen: number, buf: number, bufLen: number, out: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireRights(d, Rights.PATH_READLINK);
      return this.shared("path_readlink", d, path, () =>
        this.withPath("path_readlink", d, path, false, (r) => {
          const target = nodeFs.readlinkSync(at(r.dirFd, r.name), { encoding: "buffer" });
          const n = Math.min(target.length, bufLen);
          const { view, u8 } = this.memory();
          u8.set(target.subarray(0, n), buf);
          view.setUint32(out, n, true);
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_remove_directory. */
  path_remove_directory(fd: number, pathPtr: number, pathLen: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireWritable("path_remove_directory", d, path);
      this.requireRights(d, Rights.PATH_REMOVE_DIRECTORY);
      return this.shared("path_remove_directory", d, path, () =>
        this.withPath("path_remove_directory", d, path, false, (r) => {
          if (r.name === ".") return Errno.INVAL;
          const st = this.lstatAt(r);
          if (!st.isDirectory()) return Errno.NOTDIR;
          nodeFs.rmdirSync(at(r.dirFd, r.name));
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_rename. */
  path_rename(fd: number, oldPtr: number, oldLen: number, newFd: number, newPtr: number, newLen: number): number {
    return this.guard(() => {
      const od = this.get(fd);
      const nd = this.get(newFd);
      const oldPath = this.readPath(oldPtr, oldLen);
      const newPath = this.readPath(newPtr, newLen);
      this.requireWritable("path_rename", od, oldPath);
      this.requireWritable("path_rename", nd, newPath);
      this.requireRights(od, Rights.PATH_RENAME_SOURCE);
      this.requireRights(nd, Rights.PATH_RENAME_TARGET);
      // The one call that moves directories (and files) between mounts: it runs alone, see namespace-lock.ts.
      return this.exclusive("path_rename", nd, newPath, () =>
        this.withPath("path_rename", od, oldPath, false, (ro) =>
          this.withPath("path_rename", nd, newPath, false, (rn) => {
            if (ro.name === "." || rn.name === ".") return Errno.BUSY;
            if (ro.trailingSlash || rn.trailingSlash) {
              if (!this.lstatAt(ro).isDirectory()) return Errno.NOTDIR;
            }
            nodeFs.renameSync(at(ro.dirFd, ro.name), at(rn.dirFd, rn.name));
            return Errno.SUCCESS;
          }),
        ),
      );
    });
  }

  /** path_symlink: the link text is stored as given, but one pointing outside could never be followed anyway;
   *  absolute targets are refused outright so nothing on the host is tempted to follow them either. */
  path_symlink(oldPtr: number, oldLen: number, fd: number, newPtr: number, newLen: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const target = this.readPath(oldPtr, oldLen);
      const path = this.readPath(newPtr, newLen);
      this.requireWritable("path_symlink", d, path);
      this.requireRights(d, Rights.PATH_SYMLINK);
      if (target.startsWith("/")) {
        this.deny("path_symlink", d, path, `symlink target ${target} is absolute, outside the mount`);
        return Errno.PERM;
      }
      return this.shared("path_symlink", d, path, () =>
        this.withPath("path_symlink", d, path, false, (r) => {
          if (r.name === ".") return Errno.EXIST;
          if (r.trailingSlash) return this.exists(r) ? Errno.EXIST : Errno.NOENT;
          this.chargeCreate("path_symlink", d, path);
          nodeFs.symlinkSync(target, at(r.dirFd, r.name));
          this.keepCreatedInside("path_symlink", d, path, r, () => {
            if (nodeFs.readlinkSync(at(r.dirFd, r.name)) === target) nodeFs.unlinkSync(at(r.dirFd, r.name));
          });
          return Errno.SUCCESS;
        }),
      );
    });
  }

  /** path_unlink_file. */
  path_unlink_file(fd: number, pathPtr: number, pathLen: number): number {
    return this.guard(() => {
      const d = this.get(fd);
      const path = this.readPath(pathPtr, pathLen);
      this.requireWritable("path_unlink_file", d, path);
      this.requireRights(d, Rights.PATH_UNLINK_FILE);
      return this.shared("path_unlink_file", d, path, () =>
        this.withPath("path_unlink_file", d, path, false, (r) => {
          if (r.name === ".") return Errno.ISDIR;
          const st = this.lstatAt(r);
          if (st.isDirectory()) return Errno.ISDIR;
          if (r.trailingSlash) return Errno.NOTDIR;
          nodeFs.unlinkSync(at(r.dirFd, r.name));
          return Errno.SUCCESS;
        }),
      );
    });
  }
}
