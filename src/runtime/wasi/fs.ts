import { Errno } from "./abi.js";
import type { GuestMemory, WasiHostOptions } from "./host.js";

/**
 * The filesystem half of the host: descriptors 3 and up. Minimal version: no
 * mounts are served yet, so every descriptor beyond stdio is EBADF.
 */
export class WasiFs {
  constructor(
    private readonly options: WasiHostOptions,
    private readonly memory: () => GuestMemory,
  ) {}

  /** Opens one descriptor per mount; returns an error text if a mount cannot be served. */
  openPreopens(): string | undefined {
    void this.options;
    void this.memory;
    return undefined;
  }
  /** Closes every host fd this run opened. */
  closeAll(): void {}
  /** Whether `fd` names an open descriptor (stdio included). */
  isOpen(fd: number): boolean {
    return fd >= 0 && fd <= 2;
  }
  /** poll_oneoff readiness of a file descriptor. */
  readiness(_fd: number, _type: number): { error: number; nbytes: bigint; flags: number } {
    return { error: Errno.BADF, nbytes: 0n, flags: 0 };
  }
  fd_write(_fd: number, _iovs: number, _n: number, _out: number): number { return Errno.BADF; }
  fd_read(_fd: number, _iovs: number, _n: number, _out: number): number { return Errno.BADF; }
  fd_fdstat_get(_fd: number, _out: number): number { return Errno.BADF; }
  fd_fdstat_set_flags(_fd: number, _flags: number): number { return Errno.BADF; }
  fd_fdstat_set_rights(_fd: number, _b: bigint, _i: bigint): number { return Errno.BADF; }
  fd_filestat_get(_fd: number, _out: number): number { return Errno.BADF; }
  fd_close(_fd: number): number { return Errno.BADF; }
  fd_seek(_fd: number, _o: bigint, _w: number, _out: number): number { return Errno.BADF; }
  fd_tell(_fd: number, _out: number): number { return Errno.BADF; }
  fd_advise(_fd: number, _o: bigint, _l: bigint, _a: number): number { return Errno.BADF; }
  fd_allocate(_fd: number, _o: bigint, _l: bigint): number { return Errno.BADF; }
  fd_datasync(_fd: number): number { return Errno.BADF; }
  fd_sync(_fd: number): number { return Errno.BADF; }
  fd_filestat_set_size(_fd: number, _s: bigint): number { return Errno.BADF; }
  fd_filestat_set_times(_fd: number, _a: bigint, _m: bigint, _f: number): number { return Errno.BADF; }
  fd_pread(_fd: number, _iovs: number, _n: number, _o: bigint, _out: number): number { return Errno.BADF; }
  fd_pwrite(_fd: number, _iovs: number, _n: number, _o: bigint, _out: number): number { return Errno.BADF; }
  fd_prestat_get(_fd: number, _out: number): number { return Errno.BADF; }
  fd_prestat_dir_name(_fd: number, _p: number, _l: number): number { return Errno.BADF; }
  fd_readdir(_fd: number, _b: number, _l: number, _c: bigint, _out: number): number { return Errno.BADF; }
  fd_renumber(_from: number, _to: number): number { return Errno.BADF; }
  path_create_directory(_fd: number, _p: number, _l: number): number { return Errno.BADF; }
  path_filestat_get(_fd: number, _f: number, _p: number, _l: number, _out: number): number { return Errno.BADF; }
  path_filestat_set_times(_fd: number, _f: number, _p: number, _l: number, _a: bigint, _m: bigint, _s: number): number { return Errno.BADF; }
  path_link(_ofd: number, _of: number, _op: number, _ol: number, _nfd: number, _np: number, _nl: number): number { return Errno.BADF; }
  path_open(_fd: number, _d: number, _p: number, _l: number, _o: number, _b: bigint, _i: bigint, _f: number, _out: number): number { return Errno.BADF; }
  path_readlink(_fd: number, _p: number, _l: number, _b: number, _bl: number, _out: number): number { return Errno.BADF; }
  path_remove_directory(_fd: number, _p: number, _l: number): number { return Errno.BADF; }
  path_rename(_fd: number, _op: number, _ol: number, _nfd: number, _np: number, _nl: number): number { return Errno.BADF; }
  path_symlink(_op: number, _ol: number, _fd: number, _np: number, _nl: number): number { return Errno.BADF; }
  path_unlink_file(_fd: number, _p: number, _l: number): number { return Errno.BADF; }
}
