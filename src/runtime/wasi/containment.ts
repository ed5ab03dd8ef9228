/**
 * Path containment: how a guest path becomes a host fd without ever leaving its mount. Node has no openat,
 * so every lookup goes one component at a time through `/proc/self/fd/<dir>/<name>` with O_NOFOLLOW
 * (openat semantics on the directory we actually hold); symlinks are expanded here and never by the kernel;
 * `..` may not climb above the descriptor the lookup started from; and every directory or file opened is
 * checked with readlink(/proc/self/fd/N) to lie under its mount's real root, so a directory swapped or moved
 * mid-resolution is caught. The namespace lock orders every guest's renames against these checks.
 */
import * as nodeFs from "node:fs";
import { resolve as resolvePath } from "node:path";
import { NAMESPACE_LOCK_WAIT_MS } from "../../limits.js";
import { Errno } from "./abi.js";
import { closeHostFd, type DirDescriptor, type FsDescriptor, type MountState } from "./descriptors.js";
import { errnoOf, GuestErrno } from "./errno.js";
import { acquireExclusive, acquireShared, namespaceLockHolder, releaseExclusive, releaseShared } from "./namespace-lock.js";
import type { WasiMount } from "./types.js";

const { O_RDONLY, O_CREAT, O_EXCL, O_DIRECTORY, O_NOFOLLOW } = nodeFs.constants;

/** Symlinks expanded in one resolution before it fails with ELOOP, as Linux's MAXSYMLINKS. */
const MAX_SYMLINK_EXPANSIONS = 40;
/** Times path_open retries an O_CREAT whose file another writer keeps removing and recreating under it. */
const MAX_CREATE_ATTEMPTS = 3;

/** Where a guest path landed: a directory host fd we hold and one final component (or "." for the directory itself). */
export interface Resolved {
  readonly dirFd: number;
  /** Whether dirFd was opened by the walk (and is closed after the call), not the starting descriptor's own. */
  readonly owned: boolean;
  readonly name: string;
  readonly trailingSlash: boolean;
}

/** Records a refusal: `path` relative to `d` (or absolute, or "" for `d` itself). */
export type Deny = (operation: string, d: FsDescriptor, path: string, reason: string) => void;

/** Host path that reaches `name` inside the directory open as `fd`, like openat(fd, name) would. */
export function at(fd: number, name: string): string {
  // Even for "." keep a final component: /proc/self/fd/N itself is a (magic) symlink that O_NOFOLLOW refuses.
  return `/proc/self/fd/${fd}/${name}`;
}

/** The path the kernel names the very object `fd` holds by: followed, it is that object wherever it now is. */
export function magicLink(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** Whether what `fd` really is, in the kernel's view, lies under the mount's real root. */
export function insideMount(fd: number, mount: MountState): boolean {
  let real: string;
  try {
    real = nodeFs.readlinkSync(magicLink(fd));
  } catch {
    return false;
  }
  const root = mount.realRoot;
  return real === root || real.startsWith(root === "/" ? "/" : `${root}/`);
}

/** Opens `path` with O_NOFOLLOW; a failure is the kernel's errno for the guest. */
export function openNoFollow(path: string, flags: number, mode?: number): number {
  try {
    return nodeFs.openSync(path, flags | O_NOFOLLOW, mode);
  } catch (e: unknown) {
    throw new GuestErrno(errnoOf(e));
  }
}

/**
 * Opens a mount's root. `hostPath` is the real path the policy check resolved and approved, maybe long ago
 * (the run may have queued); resolving it again would follow a symlink someone has since put on it, possibly
 * to outside every allowed root. So it is opened as is, and served only if the kernel says the directory we
 * got is still at exactly that path. Returns the fd and mount, or the reason it cannot be served.
 */
export function openMount(m: WasiMount): { readonly hostFd: number; readonly mount: MountState } | { readonly error: string } {
  const realRoot = resolvePath(m.hostPath);
  let fd: number;
  try {
    fd = nodeFs.openSync(realRoot, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (e: unknown) {
    return { error: `mount ${m.guestPath}: cannot open host directory ${m.hostPath}: ${e instanceof Error ? e.message : String(e)}` };
  }
  let opened = "";
  try {
    opened = nodeFs.readlinkSync(magicLink(fd));
  } catch {
    // Unreadable: treated as changed below.
  }
  if (opened !== realRoot) {
    closeHostFd(fd);
    return { error: `mount ${m.guestPath}: host directory ${m.hostPath} has changed since the policy was checked` };
  }
  return { hostFd: fd, mount: { guestPath: m.guestPath, realRoot, writable: m.writable } };
}

/** lstat of the resolved name, never following it; a failure is the kernel's errno. */
export function lstatAt(r: Resolved): nodeFs.BigIntStats {
  try {
    return nodeFs.lstatSync(at(r.dirFd, r.name), { bigint: true });
  } catch (e: unknown) {
    throw new GuestErrno(errnoOf(e));
  }
}

/** Whether the resolved name exists (a dangling symlink counts). */
export function existsAt(r: Resolved): boolean {
  try {
    nodeFs.lstatSync(at(r.dirFd, r.name));
    return true;
  } catch {
    return false;
  }
}

/** Removes `r.name` if it is still the inode `created` (what this call made), never something put there since. */
export function unlinkIfSame(r: Resolved, created: nodeFs.BigIntStats): void {
  const now = nodeFs.lstatSync(at(r.dirFd, r.name), { bigint: true });
  if (now.ino === created.ino && now.dev === created.dev) nodeFs.unlinkSync(at(r.dirFd, r.name));
}

/**
 * Opens the final component of a path_open. With O_CREAT but not O_EXCL it first tries O_EXCL, so it knows
 * whether this call created the file (only then may a refusal remove it); the kernel's answers stay those of
 * the single open (EISDIR for an existing directory, ELOOP for a symlink).
 */
export function openFinal(r: Resolved, flags: number): { fd: number; created: boolean } {
  const target = at(r.dirFd, r.name);
  if ((flags & O_CREAT) === 0 || (flags & O_EXCL) !== 0)
    return { fd: openNoFollow(target, flags, 0o666), created: (flags & O_CREAT) !== 0 };
  for (let attempt = 0; ; attempt++) {
    try {
      return { fd: openNoFollow(target, flags | O_EXCL, 0o666), created: true };
    } catch (e: unknown) {
      if (!(e instanceof GuestErrno) || e.errno !== Errno.EXIST) throw e;
    }
    let opened: number;
    try {
      opened = openNoFollow(target, flags & ~O_CREAT);
    } catch (e: unknown) {
      // Removed between the two opens: create it after all (another writer keeps racing us: give up).
      if (e instanceof GuestErrno && e.errno === Errno.NOENT && attempt < MAX_CREATE_ATTEMPTS) continue;
      throw e;
    }
    if (nodeFs.fstatSync(opened).isDirectory()) {
      closeHostFd(opened);
      throw new GuestErrno(Errno.ISDIR);
    }
    return { fd: opened, created: false };
  }
}

/** The guest path a denial names: `path` under `d`, or `d` itself for "". */
export function denialPath(d: FsDescriptor, path: string): string {
  if (path === "") return d.guestPath;
  if (path.startsWith("/")) return path;
  return `${d.guestPath.endsWith("/") ? d.guestPath : `${d.guestPath}/`}${path}`;
}

/**
 * Containment for one run: walks guest paths inside their mounts, and runs every check-and-act under the
 * process's namespace lock (see namespace-lock.ts), refusing with a denial whatever would leave a mount.
 */
export class Containment {
  private readonly holder = namespaceLockHolder();

  constructor(
    private readonly lock: Int32Array,
    private readonly deny: Deny,
  ) {}

  /**
   * Walks `path` from directory `d` and stops before the final component. With `followFinal`, a final
   * symlink is expanded too (its target must stay inside). The caller releases the result (see withPath).
   */
  resolve(operation: string, d: FsDescriptor, path: string, followFinal: boolean): Resolved {
    if (d.kind !== "dir") throw new GuestErrno(Errno.NOTDIR);
    if (path === "") throw new GuestErrno(Errno.NOENT);
    // The starting directory is checked too: one moved out of the mount (by another process, or by the guest
    // into another mount) would otherwise still take creates, truncates and unlinks of names directly in it,
    // since those act before the check on the opened file.
    if (!insideMount(d.hostFd, d.mount)) {
      this.deny(operation, d, path, "the directory descriptor was moved outside the mount");
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    if (path.startsWith("/")) {
      this.deny(operation, d, path, "absolute paths are not relative to any granted directory");
      throw new GuestErrno(Errno.NOTCAPABLE);
    }
    return new Walk(this.deny, operation, d, path, followFinal).run();
  }

  /** Runs `body` with a resolved path and releases the intermediate directory however it ends. */
  withPath<T>(operation: string, d: FsDescriptor, path: string, follow: boolean, body: (r: Resolved) => T): T {
    const r = this.resolve(operation, d, path, follow);
    try {
      return body(r);
    } finally {
      if (r.owned) closeHostFd(r.dirFd);
    }
  }

  /**
   * Runs `body` (a whole path operation: walk, checks and act, or a check and a mutation through an open file) as
   * a reader of the namespace lock, so no guest's rename can move a directory between its checks and its act.
   */
  shared<T>(operation: string, d: FsDescriptor, path: string, body: () => T): T {
    const slot = acquireShared(this.lock, this.holder, NAMESPACE_LOCK_WAIT_MS);
    if (slot < 0) this.lockTimedOut(operation, d, path);
    try {
      return body();
    } finally {
      releaseShared(this.lock, slot);
    }
  }

  /** Runs `body` (a rename) with the namespace lock alone: no other guest is between a check and an act meanwhile. */
  exclusive<T>(operation: string, d: FsDescriptor, path: string, body: () => T): T {
    if (!acquireExclusive(this.lock, this.holder, NAMESPACE_LOCK_WAIT_MS)) this.lockTimedOut(operation, d, path);
    try {
      return body();
    } finally {
      releaseExclusive(this.lock, this.holder);
    }
  }

  /** Runs `body`, a mutation through the open descriptor `d`, under the lock and only while `d` still lies under its mount. */
  mutate<T>(operation: string, d: FsDescriptor, body: () => T): T {
    return this.shared(operation, d, "", () => {
      // Writes follow the file wherever it is moved; a guest's grant covers it only while it is in the mount.
      if (!insideMount(d.hostFd, d.mount)) {
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
  keepCreatedInside(operation: string, d: FsDescriptor, path: string, r: Resolved, undo: () => void): void {
    if (insideMount(r.dirFd, d.mount)) return;
    try {
      undo();
    } catch {
      // Already gone or replaced: nothing of ours is left to remove.
    }
    this.deny(operation, d, path, "the directory was moved outside the mount during the call; what it created there was removed");
    throw new GuestErrno(Errno.NOTCAPABLE);
  }

  private lockTimedOut(operation: string, d: FsDescriptor, path: string): never {
    this.deny(operation, d, path, `another run held the filesystem lock for over ${NAMESPACE_LOCK_WAIT_MS} ms`);
    throw new GuestErrno(Errno.BUSY);
  }
}

/** One resolution in progress: the directory it stands in and the components still to walk. */
class Walk {
  /** Pending components, last one first, so a symlink's target can be pushed in front of the rest. */
  private readonly pending: string[];
  private readonly trailingSlash: boolean;
  private cur: number;
  private owned = false;
  /** Directories below the starting one; `..` may not take it below zero. */
  private depth = 0;
  private expansions = 0;

  constructor(
    private readonly deny: Deny,
    private readonly operation: string,
    private readonly d: DirDescriptor,
    private readonly path: string,
    private readonly followFinal: boolean,
  ) {
    this.trailingSlash = path.endsWith("/");
    this.pending = path
      .split("/")
      .filter((c) => c !== "")
      .reverse();
    this.cur = d.hostFd;
  }

  run(): Resolved {
    try {
      return this.walk();
    } catch (e: unknown) {
      if (this.owned) closeHostFd(this.cur);
      throw e;
    }
  }

  private walk(): Resolved {
    for (;;) {
      const c = this.pending.pop();
      if (c === undefined) return this.stop(".");
      const last = this.pending.length === 0;
      if (c === ".") {
        if (last) return this.stop(".");
        continue;
      }
      if (c === "..") {
        if (this.depth === 0) this.refuse("`..` leads outside the granted directory");
        this.step(openNoFollow(at(this.cur, ".."), O_RDONLY | O_DIRECTORY));
        this.depth--;
        continue;
      }
      if (last && !this.followFinal && !this.trailingSlash) return this.stop(c);
      if (last) {
        let st: nodeFs.Stats;
        try {
          st = nodeFs.lstatSync(at(this.cur, c));
        } catch (e: unknown) {
          const errno = errnoOf(e);
          if (errno === Errno.NOENT) return this.stop(c);
          throw new GuestErrno(errno);
        }
        if (st.isSymbolicLink()) {
          this.expand(c);
          continue;
        }
        return this.stop(c);
      }
      let next: number;
      try {
        next = openNoFollow(at(this.cur, c), O_RDONLY | O_DIRECTORY);
      } catch (e: unknown) {
        if (!(e instanceof GuestErrno) || (e.errno !== Errno.LOOP && e.errno !== Errno.NOTDIR)) throw e;
        let isLink = false;
        try {
          isLink = nodeFs.lstatSync(at(this.cur, c)).isSymbolicLink();
        } catch (e2: unknown) {
          throw new GuestErrno(errnoOf(e2));
        }
        if (!isLink) throw new GuestErrno(Errno.NOTDIR);
        this.expand(c);
        continue;
      }
      this.step(next);
      this.depth++;
    }
  }

  private stop(name: string): Resolved {
    return { dirFd: this.cur, owned: this.owned, name, trailingSlash: this.trailingSlash };
  }

  private refuse(reason: string): never {
    this.deny(this.operation, this.d, this.path, reason);
    throw new GuestErrno(Errno.NOTCAPABLE);
  }

  /** Moves into `next` (a directory just opened), once it is proven to lie inside the mount. */
  private step(next: number): void {
    if (!insideMount(next, this.d.mount)) {
      closeHostFd(next);
      this.refuse("a directory on the path resolved outside the mount (moved or swapped during resolution)");
    }
    if (this.owned) closeHostFd(this.cur);
    this.cur = next;
    this.owned = true;
  }

  /** Splices the target of symlink `name` (in the current directory) in front of the remaining components. */
  private expand(name: string): void {
    if (++this.expansions > MAX_SYMLINK_EXPANSIONS) throw new GuestErrno(Errno.LOOP);
    let target: string;
    try {
      target = nodeFs.readlinkSync(at(this.cur, name));
    } catch (e: unknown) {
      throw new GuestErrno(errnoOf(e));
    }
    if (target.startsWith("/")) this.refuse(`symlink ${name} points to absolute path ${target}, outside the mount`);
    const parts = target.split("/").filter((c) => c !== "");
    if (target.endsWith("/") && this.pending.length === 0) parts.push(".");
    for (let i = parts.length - 1; i >= 0; i--) this.pending.push(parts[i] as string);
    if (parts.length === 0) this.pending.push(".");
  }
}
