import { DEFAULT_MAX_CREATED_ENTRIES, DEFAULT_MAX_WRITE_BYTES } from "../../limits.js";
import { DIR_RIGHTS, Errno, FILE_RIGHTS, MUTATING_RIGHTS } from "./abi.js";
import { Containment, denialPath, openMount } from "./containment.js";
import { DescriptorTable, type FsDescriptor } from "./descriptors.js";
import { GuestErrno } from "./errno.js";
import { GuestMemory } from "./guest-memory.js";
import { processNamespaceLock } from "./namespace-lock.js";
import type { Ptr, WasiHostOptions } from "./types.js";

/** Longest guest path accepted, as Linux's PATH_MAX. */
const MAX_PATH_BYTES = 4096;

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** Thrown by proc_exit to unwind the guest's stack; never escapes a run. */
export class ProcExit {
  constructor(readonly code: number) {}
}
/** Thrown when a stream reaches its cap; never escapes a run. */
export class OutputLimit {
  constructor(readonly message: string) {}
}
/** Thrown when the run's time ran out while the guest waited on the host (an HTTP response); never escapes a run. */
export class TimeLimit {
  constructor(readonly message: string) {}
}
/** How a run was ended from inside a host call. */
export type RunEnd = ProcExit | OutputLimit | TimeLimit;

/**
 * Everything one run's calls share: its options, guest memory, descriptor table, containment, quotas and
 * stdio positions. The call families (calls-*.ts) are functions of it; none holds state of its own.
 */
export class WasiContext {
  /** The guest's memory, attached once the instance exists. */
  readonly mem = new GuestMemory();
  /** Every descriptor the guest holds. */
  readonly fds = new DescriptorTable();
  /** Path walks and the namespace lock. */
  readonly containment: Containment;
  /** Bytes of stdin the guest has read. */
  stdinPos = 0;
  /** Bytes kept of stdout. */
  stdoutBytes = 0;
  /** Bytes kept of stderr. */
  stderrBytes = 0;
  /** Whether stderr carried Rust's "memory allocation of N bytes failed" (the run then ends as memory_limit). */
  sawAllocFailure = false;
  /**
   * How the run ended, once proc_exit or an output cap said so. Wasm exception handling (`catch_all`, on by
   * default in Node 20) lets a guest catch what we throw to unwind it and carry on: it could then print past
   * its exit, or return normally so that an exit code or an output_limit was reported as a clean exit 0. So
   * the end is remembered, every later host call throws it again, and it wins.
   */
  ended: RunEnd | undefined;
  /** Bytes this run may still add to its writable mounts. */
  private writeBytesLeft: number;
  /** Files, directories and links this run may still create. */
  private createsLeft: number;

  constructor(readonly options: WasiHostOptions) {
    this.writeBytesLeft = options.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES;
    this.createsLeft = options.maxCreatedEntries ?? DEFAULT_MAX_CREATED_ENTRIES;
    this.containment = new Containment(options.namespaceLock ?? processNamespaceLock(), (op, d, path, reason) =>
      this.deny(op, d, path, reason),
    );
  }

  /** Ends the run from inside a host call: remembered (see `ended`) and thrown to unwind the guest. */
  end(how: RunEnd): never {
    this.ended = how;
    throw how;
  }

  /** Opens one descriptor per mount (fds 3, 4, ...); returns an error text if a mount cannot be served. */
  openPreopens(): string | undefined {
    for (const m of this.options.mounts) {
      const opened = openMount(m);
      if ("error" in opened) return opened.error;
      const mask = m.writable ? ~0n : ~MUTATING_RIGHTS;
      this.fds.install({
        kind: "dir",
        hostFd: opened.hostFd,
        mount: opened.mount,
        guestPath: m.guestPath,
        rights: { base: DIR_RIGHTS & mask, inheriting: (DIR_RIGHTS | FILE_RIGHTS) & mask },
        fdflags: 0,
        preopenName: encoder.encode(m.guestPath),
        dirents: undefined,
      });
    }
    return undefined;
  }

  /** Records a refusal so the agent learns which grant it lacked. */
  deny(operation: string, d: FsDescriptor, path: string, reason: string): void {
    this.options.onDenial({ operation, path: denialPath(d, path), reason });
  }

  /** Fails with EPERM (and records a denial) when a mutating path call targets a read-only mount. */
  requireWritable(operation: string, d: FsDescriptor, path: string): void {
    if (!d.mount.writable) {
      this.deny(operation, d, path, `mount ${d.mount.guestPath} is read-only`);
      throw new GuestErrno(Errno.PERM);
    }
  }

  /**
   * Fails with EBADF unless `d` holds the mutating `right`, recording a denial when the reason is that its
   * mount is read-only (so the agent learns the grant it lacked, not just that the descriptor was wrong).
   */
  requireWriteRight(operation: string, d: FsDescriptor, right: bigint): void {
    if ((d.rights.base & right) !== 0n) return;
    if (!d.mount.writable) this.deny(operation, d, "", `mount ${d.mount.guestPath} is read-only`);
    throw new GuestErrno(Errno.BADF);
  }

  /**
   * Takes `bytes` from the run's write quota, or refuses the whole operation with EDQUOT and a denial:
   * writable mounts may share a filesystem with the module cache and other callers' data.
   */
  chargeWrite(operation: string, d: FsDescriptor, bytes: number): void {
    if (bytes <= 0) return;
    if (bytes > this.writeBytesLeft) {
      const quota = this.options.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES;
      this.deny(operation, d, "", `the run's write quota of ${quota} bytes (max_write_bytes) would be exceeded`);
      throw new GuestErrno(Errno.DQUOT);
    }
    this.writeBytesLeft -= bytes;
  }

  /** Gives back quota charged for bytes that were never written. */
  refundWrite(bytes: number): void {
    this.writeBytesLeft += bytes;
  }

  /** Counts one new file, directory or link, or refuses it with EDQUOT and a denial past the run's allowance. */
  chargeCreate(operation: string, d: FsDescriptor, path: string): void {
    if (this.createsLeft <= 0) {
      const allowed = this.options.maxCreatedEntries ?? DEFAULT_MAX_CREATED_ENTRIES;
      this.deny(operation, d, path, `the run may create at most ${allowed} files, directories and links`);
      throw new GuestErrno(Errno.DQUOT);
    }
    this.createsLeft--;
  }

  /** A guest path argument: at most MAX_PATH_BYTES of valid UTF-8 without NUL (ENAMETOOLONG, EFAULT, EILSEQ, EINVAL). */
  readPath(ptr: Ptr, len: number): string {
    if (len > MAX_PATH_BYTES) throw new GuestErrno(Errno.NAMETOOLONG);
    let s: string;
    try {
      s = decoder.decode(this.mem.slice(ptr, len));
    } catch (e: unknown) {
      if (e instanceof GuestErrno) throw e;
      throw new GuestErrno(Errno.ILSEQ);
    }
    if (s.includes("\0")) throw new GuestErrno(Errno.INVAL);
    return s;
  }
}
