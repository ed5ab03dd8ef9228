import type { HttpTransport } from "../net/guest-http.js";

/**
 * The shapes the WASI host shares with the rest of the runtime: what a run is given, what it reports, and
 * the typed preview1 interface every call family implements. Kept apart from the host so that nothing
 * imports the host for a type, and the host's modules never import each other in a circle.
 */

/** A host directory the guest sees at `guestPath`, already checked against the policy and the operator's roots. */
export interface WasiMount {
  /** The real path the policy check resolved; opened as is, never resolved again. */
  readonly hostPath: string;
  /** Absolute, normalized path the guest sees it at. */
  readonly guestPath: string;
  /** Whether the guest may create, modify and remove entries under it. */
  readonly writable: boolean;
}

/** One operation the host refused, reported so an agent learns which grant it lacked. */
export interface WasiDenial {
  readonly operation: string;
  readonly path: string;
  readonly reason: string;
}

/** Everything one execution of a command module needs. */
export interface WasiHostOptions {
  readonly args: readonly string[];
  /** A Map (it survives postMessage intact), so that every key reaches the guest, `__proto__` included. */
  readonly env: ReadonlyMap<string, string>;
  readonly stdin: Uint8Array;
  readonly mounts: readonly WasiMount[];
  readonly memoryLimitBytes: number;
  /** The memory this run supplies to a module whose memory is an import (see importMemory), in pages. */
  readonly memory?: { readonly initial: number; readonly maximum: number };
  readonly maxOutputBytes: number;
  /** Bytes the run may add to its writable mounts (writes, and growth by set_size or allocate); DEFAULT_MAX_WRITE_BYTES if absent. */
  readonly maxWriteBytes?: number;
  /** Files, directories and links the run may create; DEFAULT_MAX_CREATED_ENTRIES if absent. */
  readonly maxCreatedEntries?: number;
  onStdout(bytes: Uint8Array): void;
  onStderr(bytes: Uint8Array): void;
  onDenial(denial: WasiDenial): void;
  flush?(): void;
  /** Carries the guest's outbound HTTP requests; absent when the policy grants no network (each request is then refused). */
  readonly http?: HttpTransport;
  /** The process's namespace lock (processNamespaceLock), shared with the other workers' guests; a worker thread must be given it. */
  readonly namespaceLock?: Int32Array;
}

/** How one run ended. */
export type WasiRunResult =
  | { readonly outcome: "exited"; readonly exitCode: number }
  | { readonly outcome: "trap"; readonly message: string }
  | { readonly outcome: "memory_limit"; readonly message: string }
  | { readonly outcome: "output_limit"; readonly message: string }
  | { readonly outcome: "timeout"; readonly message: string };

/** A guest pointer or length: an i32 the import binding has already taken as the u32 it stands for. */
export type Ptr = number;
/** A preview1 errno (u16), returned by every call. */
export type ErrnoValue = number;

/**
 * `wasi_snapshot_preview1` as the host implements it, from the witx signatures: i32 parameters are numbers
 * (already u32), i64 parameters are BigInts. Each call family implements a slice of it, and the host's
 * import table must satisfy all of it, so a missing, misspelled or mis-typed call fails the build.
 */
export interface Preview1Calls {
  args_get(argv: Ptr, argvBuf: Ptr): ErrnoValue;
  args_sizes_get(argcOut: Ptr, bufSizeOut: Ptr): ErrnoValue;
  environ_get(environ: Ptr, environBuf: Ptr): ErrnoValue;
  environ_sizes_get(countOut: Ptr, bufSizeOut: Ptr): ErrnoValue;
  clock_res_get(id: number, out: Ptr): ErrnoValue;
  clock_time_get(id: number, precision: bigint, out: Ptr): ErrnoValue;
  fd_advise(fd: number, offset: bigint, len: bigint, advice: number): ErrnoValue;
  fd_allocate(fd: number, offset: bigint, len: bigint): ErrnoValue;
  fd_close(fd: number): ErrnoValue;
  fd_datasync(fd: number): ErrnoValue;
  fd_fdstat_get(fd: number, out: Ptr): ErrnoValue;
  fd_fdstat_set_flags(fd: number, flags: number): ErrnoValue;
  fd_fdstat_set_rights(fd: number, base: bigint, inheriting: bigint): ErrnoValue;
  fd_filestat_get(fd: number, out: Ptr): ErrnoValue;
  fd_filestat_set_size(fd: number, size: bigint): ErrnoValue;
  fd_filestat_set_times(fd: number, atim: bigint, mtim: bigint, fstflags: number): ErrnoValue;
  fd_pread(fd: number, iovs: Ptr, iovsLen: number, offset: bigint, nreadOut: Ptr): ErrnoValue;
  fd_prestat_get(fd: number, out: Ptr): ErrnoValue;
  fd_prestat_dir_name(fd: number, path: Ptr, pathLen: number): ErrnoValue;
  fd_pwrite(fd: number, iovs: Ptr, iovsLen: number, offset: bigint, nwrittenOut: Ptr): ErrnoValue;
  fd_read(fd: number, iovs: Ptr, iovsLen: number, nreadOut: Ptr): ErrnoValue;
  fd_readdir(fd: number, buf: Ptr, bufLen: number, cookie: bigint, usedOut: Ptr): ErrnoValue;
  fd_renumber(from: number, to: number): ErrnoValue;
  fd_seek(fd: number, offset: bigint, whence: number, out: Ptr): ErrnoValue;
  fd_sync(fd: number): ErrnoValue;
  fd_tell(fd: number, out: Ptr): ErrnoValue;
  fd_write(fd: number, iovs: Ptr, iovsLen: number, nwrittenOut: Ptr): ErrnoValue;
  path_create_directory(fd: number, path: Ptr, pathLen: number): ErrnoValue;
  path_filestat_get(fd: number, lookupflags: number, path: Ptr, pathLen: number, out: Ptr): ErrnoValue;
  path_filestat_set_times(
    fd: number,
    lookupflags: number,
    path: Ptr,
    pathLen: number,
    atim: bigint,
    mtim: bigint,
    fstflags: number,
  ): ErrnoValue;
  path_link(oldFd: number, oldFlags: number, oldPath: Ptr, oldLen: number, newFd: number, newPath: Ptr, newLen: number): ErrnoValue;
  path_open(
    fd: number,
    dirflags: number,
    path: Ptr,
    pathLen: number,
    oflags: number,
    base: bigint,
    inheriting: bigint,
    fdflags: number,
    out: Ptr,
  ): ErrnoValue;
  path_readlink(fd: number, path: Ptr, pathLen: number, buf: Ptr, bufLen: number, usedOut: Ptr): ErrnoValue;
  path_remove_directory(fd: number, path: Ptr, pathLen: number): ErrnoValue;
  path_rename(fd: number, oldPath: Ptr, oldLen: number, newFd: number, newPath: Ptr, newLen: number): ErrnoValue;
  path_symlink(oldPath: Ptr, oldLen: number, fd: number, newPath: Ptr, newLen: number): ErrnoValue;
  path_unlink_file(fd: number, path: Ptr, pathLen: number): ErrnoValue;
  poll_oneoff(subscriptions: Ptr, events: Ptr, nsubscriptions: number, neventsOut: Ptr): ErrnoValue;
  proc_exit(code: number): ErrnoValue;
  proc_raise(signal: number): ErrnoValue;
  sched_yield(): ErrnoValue;
  random_get(buf: Ptr, bufLen: number): ErrnoValue;
  sock_accept(fd: number, flags: number, out: Ptr): ErrnoValue;
  sock_recv(fd: number, riData: Ptr, riDataLen: number, riFlags: number, roDatalenOut: Ptr, roFlagsOut: Ptr): ErrnoValue;
  sock_send(fd: number, siData: Ptr, siDataLen: number, siFlags: number, soDatalenOut: Ptr): ErrnoValue;
  sock_shutdown(fd: number, how: number): ErrnoValue;
}
