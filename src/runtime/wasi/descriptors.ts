import * as nodeFs from "node:fs";
import { Errno } from "./abi.js";
import { GuestErrno } from "./errno.js";

/** A mount as served: its real (symlink-free) host root, fixed when the run starts. */
export interface MountState {
  readonly guestPath: string;
  readonly realRoot: string;
  readonly writable: boolean;
}

/** What a descriptor may do (preview1 rights); narrowed by fd_fdstat_set_rights, never widened. */
export interface DescriptorRights {
  base: bigint;
  inheriting: bigint;
}

/** One entry of a directory listing, as fd_readdir returns it. */
export interface Dirent {
  readonly name: Uint8Array;
  readonly ino: bigint;
  readonly type: number;
}

/** The guest's standard input: the request's stdin, known in full before the run starts. */
export interface StdinDescriptor {
  readonly kind: "stdin";
}
/** The guest's standard output or error: captured, capped streams. */
export interface OutputDescriptor {
  readonly kind: "stdout" | "stderr";
}

/** What a directory and a file descriptor share: a host fd under one mount. */
interface HostBacked {
  hostFd: number;
  readonly mount: MountState;
  /** Guest-visible path, for denial records only. */
  readonly guestPath: string;
  readonly rights: DescriptorRights;
  fdflags: number;
}

/** A directory under a mount (a preopen, or one the guest opened). */
export interface DirDescriptor extends HostBacked {
  readonly kind: "dir";
  /** The guest path a preopen is announced under (fd_prestat_*); undefined for directories the guest opened. */
  readonly preopenName: Uint8Array | undefined;
  /** The listing fd_readdir serves, taken at cookie 0. */
  dirents: Dirent[] | undefined;
}

/** A regular file under a mount. */
export interface FileDescriptor extends HostBacked {
  readonly kind: "file";
  /** O_RDONLY / O_WRONLY / O_RDWR the host fd was opened with, to reopen it when APPEND is toggled. */
  readonly access: number;
  /** The host keeps positions (Node has no lseek). */
  position: number;
}

/** Every kind of descriptor a guest can hold. */
export type Descriptor = StdinDescriptor | OutputDescriptor | DirDescriptor | FileDescriptor;
/** A descriptor backed by a host fd under a mount. */
export type FsDescriptor = DirDescriptor | FileDescriptor;
/** Which kinds a call refuses, and with what errno: each call states its answers once, on its first line. */
export interface KindErrors {
  /** For stdin, stdout and stderr. */
  readonly stdio: number;
  /** For a directory (file getters) or a file (directory getters). */
  readonly other: number;
}

const STDIN: StdinDescriptor = { kind: "stdin" };
const STDOUT: OutputDescriptor = { kind: "stdout" };
const STDERR: OutputDescriptor = { kind: "stderr" };

/** Closes a host fd we own; closing can only fail for an fd that is already gone, which leaves nothing to release. */
export function closeHostFd(hostFd: number): void {
  try {
    nodeFs.closeSync(hostFd);
  } catch {
    // Already gone: nothing is left to release.
  }
}

/**
 * The run's one descriptor table: guest fd → tagged descriptor, stdio included (fd_renumber and fd_close can
 * move or drop them like any other). Its typed getters are the only way calls reach a descriptor, and each
 * throws the errno the call chose for a closed fd or the wrong kind, so no call tests kinds by hand.
 */
export class DescriptorTable {
  private readonly slots: (Descriptor | undefined)[] = [STDIN, STDOUT, STDERR];
  /** Open descriptors backed by a host fd (preopens included), counted against MAX_OPEN_FDS. */
  private hostBacked = 0;

  /** How many descriptors hold a host fd. */
  get openCount(): number {
    return this.hostBacked;
  }

  /** The descriptor at `fd`, or undefined. */
  lookup(fd: number): Descriptor | undefined {
    return this.slots[fd];
  }

  /** The descriptor at `fd` of any kind; EBADF if none. */
  get(fd: number): Descriptor {
    const d = this.slots[fd];
    if (d === undefined) throw new GuestErrno(Errno.BADF);
    return d;
  }

  /** A directory or file descriptor (what path calls start from); EBADF for stdio and closed fds. */
  fsEntry(fd: number): FsDescriptor {
    const d = this.slots[fd];
    if (d !== undefined && (d.kind === "dir" || d.kind === "file")) return d;
    throw new GuestErrno(Errno.BADF);
  }

  /** The regular file at `fd`; EBADF if closed, `errors.stdio` for stdio, `errors.other` for a directory. */
  file(fd: number, errors: KindErrors): FileDescriptor {
    const d = this.get(fd);
    if (d.kind === "file") return d;
    throw new GuestErrno(d.kind === "dir" ? errors.other : errors.stdio);
  }

  /** The directory at `fd`; EBADF if closed, `errors.stdio` for stdio, `errors.other` for a file. */
  dir(fd: number, errors: KindErrors): DirDescriptor {
    const d = this.get(fd);
    if (d.kind === "dir") return d;
    throw new GuestErrno(d.kind === "file" ? errors.other : errors.stdio);
  }

  /** Installs `d` at the lowest free fd and returns it. */
  install(d: FsDescriptor): number {
    let fd = 3;
    while (this.slots[fd] !== undefined) fd++;
    this.slots[fd] = d;
    this.hostBacked++;
    return fd;
  }

  /** Closes `fd` (stdio and preopens included, as wasmtime allows); EBADF if not open. */
  close(fd: number): void {
    const d = this.get(fd);
    this.slots[fd] = undefined;
    if (d.kind === "dir" || d.kind === "file") {
      this.hostBacked--;
      closeHostFd(d.hostFd);
    }
  }

  /** Moves `from` onto `to`, closing what `to` held; both must be open (EBADF). */
  renumber(from: number, to: number): void {
    const d = this.get(from);
    this.get(to);
    if (from === to) return;
    this.close(to);
    this.slots[to] = d;
    this.slots[from] = undefined;
  }

  /** Closes every host fd this run opened. */
  closeAll(): void {
    for (const d of this.slots) {
      if (d !== undefined && (d.kind === "dir" || d.kind === "file")) closeHostFd(d.hostFd);
    }
    this.slots.length = 0;
    this.hostBacked = 0;
  }
}

/** Throws `errno` (ENOTCAPABLE unless told) unless `d` holds every right in `rights`. */
export function requireRight(d: FsDescriptor, rights: bigint, errno: number = Errno.NOTCAPABLE): void {
  if ((d.rights.base & rights) !== rights) throw new GuestErrno(errno);
}
