import { MEMORY_IMPORT_MODULE, MEMORY_IMPORT_NAME } from "../wasm/memory-cap.js";
import { HTTP_FUNCTIONS, HTTP_MODULE } from "../net/http-abi.js";
import { guestHttpImports, type HttpTransport } from "../net/guest-http.js";
import { randomFillSync } from "node:crypto";
import {
  Clock,
  Errno,
  EVENT_SIZE,
  EVENTRW_HANGUP,
  EventType,
  Filetype,
  Rights,
  STDIO_RIGHTS,
  SUBCLOCK_ABSTIME,
  SUBSCRIPTION_SIZE,
  WASI_MODULE,
} from "./abi.js";
import { WasiFs } from "./fs.js";
import { PREVIEW1_FUNCTIONS } from "./functions.js";
import { namespaceLockHolder, processNamespaceLock, releaseNamespaceLockHeldBy } from "./namespace-lock.js";

export { namespaceLockHolder, processNamespaceLock, releaseNamespaceLockHeldBy };

/** A host directory the guest sees at `guestPath`. */
export interface WasiMount {
  readonly hostPath: string;
  readonly guestPath: string;
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

/** Thrown by proc_exit to unwind the guest's stack; never escapes run(). */
class ProcExit {
  constructor(readonly code: number) {}
}
/** Thrown when a stream reaches its cap; never escapes run(). */
class OutputLimit {
  constructor(readonly message: string) {}
}
/** Thrown when the run's time ran out while the guest waited on the host (an HTTP response); never escapes run(). */
class TimeLimit {
  constructor(readonly message: string) {}
}

/** Shared cell that nobody ever notifies: Atomics.wait on it is a precise, CPU-free sleep. */
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));
/** Class of the exceptions a guest can `throw` (wasm exception handling is on by default in Node 20). */
const WasmException = (WebAssembly as unknown as { Exception?: abstract new (...args: never[]) => object }).Exception;
/** Rust's std prints this to stderr right before aborting on a failed allocation. */
const ALLOC_FAILURE_MARKER = "memory allocation of ";
const NS_PER_MS = 1_000_000;
const U64_MAX = (1n << 64n) - 1n;

const encoder = new TextEncoder();

function encodeStrings(strings: readonly string[]): { offsets: number[]; bytes: Uint8Array } {
  const parts = strings.map((s) => encoder.encode(s));
  const total = parts.reduce((n, p) => n + p.length + 1, 0);
  const bytes = new Uint8Array(total);
  const offsets: number[] = [];
  let pos = 0;
  for (const p of parts) {
    offsets.push(pos);
    bytes.set(p, pos);
    pos += p.length + 1; // NUL terminator is already 0
  }
  return { offsets, bytes };
}

/**
 * Whether [ptr, ptr + len) lies inside guest memory. Wasm passes i32 arguments to JS as *signed* numbers, so
 * callers first take them as u32 (`>>> 0`): otherwise a "4 GiB" length arrives as -1 and slips past the check.
 */
function inBounds(u8: Uint8Array, ptr: number, len: number): boolean {
  return ptr + len <= u8.length;
}

/** What V8 says when a DataView or typed-array access falls outside guest memory (Node 20's messages). */
const GUEST_MEMORY_FAULT_MESSAGE = /outside the bounds of the DataView|offset is out of bounds/;

/**
 * Whether the host threw because a guest-supplied pointer lies outside guest memory: the guest's fault,
 * which preview1 answers with EFAULT (a host call must never end the run with a host exception).
 */
/** An i32 argument as the u32 it stands for (other arguments, i64 BigInts and absent ones, as they are). */
function u32(x: unknown): unknown {
  return typeof x === "number" ? x >>> 0 : x;
}

function isGuestMemoryFault(e: unknown): boolean {
  return e instanceof RangeError && GUEST_MEMORY_FAULT_MESSAGE.test(e.message);
}

function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/** Guest-memory accessors; the host refreshes them when memory grows (the old ArrayBuffer detaches). */
export interface GuestMemory {
  view: DataView;
  u8: Uint8Array;
}

/**
 * Our own `wasi_snapshot_preview1` host. One instance serves one run: the worker
 * builds it with the run's options and calls run() synchronously.
 */
export class WasiHost {
  private readonly options: WasiHostOptions;
  private memory: WebAssembly.Memory | undefined;
  private buffer: ArrayBuffer | undefined;
  private readonly mem: GuestMemory = { view: new DataView(new ArrayBuffer(0)), u8: new Uint8Array(0) };
  private readonly argv: { offsets: number[]; bytes: Uint8Array };
  private readonly environ: { offsets: number[]; bytes: Uint8Array };
  private stdinPos = 0;
  private stdoutBytes = 0;
  private stderrBytes = 0;
  private sawAllocFailure = false;
  /**
   * How the run ended, once proc_exit or an output cap said so. Wasm exception handling (`catch_all`, on by
   * default in Node 20) lets a guest catch what we throw to unwind it and carry on: it could then print past
   * its exit, or return normally so that an exit code or an output_limit was reported as a clean exit 0
   * (red-team finding). So the end is remembered, every later host call throws it again, and it wins.
   */
  private ended: ProcExit | OutputLimit | TimeLimit | undefined;
  private readonly fs: WasiFs;
  /** This run's preview1 functions, called through a {@link WasiImports}. */
  private readonly table: WebAssembly.ModuleImports;
  /** This run's sandboxd_http_v1 functions, called through a {@link WasiImports}. */
  private readonly httpTable: WebAssembly.ModuleImports;
  /** Unix epoch minus the monotonic origin, taken per run so a stepped system clock is picked up by the next run. */
  private readonly realtimeOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

  constructor(options: WasiHostOptions) {
    this.options = options;
    this.argv = encodeStrings(options.args);
    this.environ = encodeStrings(Array.from(options.env, ([k, v]) => `${k}=${v}`));
    this.fs = new WasiFs(options, () => this.refresh());
    this.table = this.functions();
    this.httpTable = guestHttpImports({
      transport: options.http,
      memory: () => this.refresh().u8,
      onDenial: (denial) => this.options.onDenial(denial),
      flush: () => this.options.flush?.(),
      endRunOutOfTime: (message) => {
        this.ended = new TimeLimit(message);
        throw this.ended;
      },
    });
  }

  /** Instantiates the module with our imports and runs `_start`. Never throws for anything the guest does;
   *  closes every host fd it opened before returning, however the run ended. */
  run(module: WebAssembly.Module): WasiRunResult {
    const imports = new WasiImports();
    return this.runWith(imports, () => {
      const namespaces: WebAssembly.Imports = { [WASI_MODULE]: imports.functions, [HTTP_MODULE]: imports.http };
      if (this.options.memory) namespaces[MEMORY_IMPORT_MODULE] = { [MEMORY_IMPORT_NAME]: new WebAssembly.Memory(this.options.memory) };
      return new WebAssembly.Instance(module, namespaces);
    });
  }

  /**
   * Runs `_start` of the instance `instantiate` returns: one made now, or one made in advance with
   * `imports` that has never run. The imports call this host until the run ends. Never throws for
   * anything the guest does; closes every host fd it opened before returning.
   */
  runWith(imports: WasiImports, instantiate: () => WebAssembly.Instance): WasiRunResult {
    imports.host = this;
    try {
      const fsError = this.fs.openPreopens();
      if (fsError !== undefined) return { outcome: "trap", message: fsError };
      const instance = instantiate();
      const memory = instance.exports["memory"];
      const start = instance.exports["_start"];
      if (!(memory instanceof WebAssembly.Memory) || typeof start !== "function") {
        return { outcome: "trap", message: "the module must export `memory` and a `_start` function" };
      }
      this.memory = memory;
      this.refresh();
      (start as () => void)();
      return this.ended !== undefined ? this.classify(this.ended) : { outcome: "exited", exitCode: 0 };
    } catch (e: unknown) {
      return this.classify(this.ended ?? e);
    } finally {
      imports.host = undefined;
      this.fs.closeAll();
    }
  }

  private classify(e: unknown): WasiRunResult {
    if (e instanceof ProcExit) return { outcome: "exited", exitCode: e.code };
    if (e instanceof OutputLimit) return { outcome: "output_limit", message: e.message };
    if (e instanceof TimeLimit) return { outcome: "timeout", message: e.message };
    const message = e instanceof Error ? e.message : String(e);
    if (this.sawAllocFailure) {
      return {
        outcome: "memory_limit",
        message: `guest memory allocation failed at the ${this.options.memoryLimitBytes}-byte memory limit (${message})`,
      };
    }
    if (e instanceof RangeError && /out of memory|allocat/i.test(message)) {
      return {
        outcome: "memory_limit",
        message: `guest memory could not be allocated within the ${this.options.memoryLimitBytes}-byte memory limit (${message})`,
      };
    }
    if (e instanceof WebAssembly.RuntimeError || e instanceof RangeError) return { outcome: "trap", message };
    // The guest's own uncaught exception is its failure, not ours (it was reported as "host error: [object ...]").
    if (WasmException !== undefined && e instanceof WasmException)
      return { outcome: "trap", message: "the guest threw a wasm exception that nothing caught" };
    // A host bug must not take the worker down either; report it as a trap with its text.
    return { outcome: "trap", message: `host error: ${message}` };
  }

  /** Refreshes the cached views after memory.grow replaced the buffer; cheap identity check otherwise. */
  private refresh(): GuestMemory {
    const memory = this.memory;
    if (memory !== undefined && memory.buffer !== this.buffer) {
      const buffer = memory.buffer;
      this.buffer = buffer;
      this.mem.view = new DataView(buffer);
      this.mem.u8 = new Uint8Array(buffer);
    }
    return this.mem;
  }

  private writeStrings(data: { offsets: number[]; bytes: Uint8Array }, ptrsArg: number, bufArg: number): number {
    const { view, u8 } = this.refresh();
    const ptrs = ptrsArg >>> 0;
    const buf = bufArg >>> 0;
    if (!inBounds(u8, ptrs, data.offsets.length * 4) || !inBounds(u8, buf, data.bytes.length)) return Errno.FAULT;
    u8.set(data.bytes, buf);
    for (let i = 0; i < data.offsets.length; i++) view.setUint32(ptrs + i * 4, buf + (data.offsets[i] as number), true);
    return Errno.SUCCESS;
  }

  private writeOut(fd: 1 | 2, iovsArg: number, iovsLenArg: number, nwritten: number): number {
    const { view, u8 } = this.refresh();
    const iovs = iovsArg >>> 0;
    const iovsLen = iovsLenArg >>> 0;
    // Check the iovec array and every buffer it names before copying anything, and copy only what the cap
    // keeps: a guest may claim far more than its memory holds (red-team: 15 iovecs of 256 MiB from a 64 KiB
    // memory once made the worker allocate, and post to the daemon, a 3.75 GiB buffer).
    if (!inBounds(u8, iovs, iovsLen * 8)) return Errno.FAULT;
    let total = 0;
    for (let i = 0; i < iovsLen; i++) {
      const ptr = view.getUint32(iovs + i * 8, true);
      const len = view.getUint32(iovs + i * 8 + 4, true);
      if (!inBounds(u8, ptr, len)) return Errno.FAULT;
      total += len;
    }
    const cap = this.options.maxOutputBytes;
    const used = fd === 1 ? this.stdoutBytes : this.stderrBytes;
    const room = Math.max(0, cap - used);
    // A fresh buffer of exactly the kept bytes: posting a view of a larger buffer would copy all of it.
    const deliver = new Uint8Array(Math.min(total, room));
    for (let i = 0, pos = 0; i < iovsLen && pos < deliver.length; i++) {
      const ptr = view.getUint32(iovs + i * 8, true);
      const len = Math.min(view.getUint32(iovs + i * 8 + 4, true), deliver.length - pos);
      deliver.set(u8.subarray(ptr, ptr + len), pos);
      pos += len;
    }
    if (fd === 1) {
      this.stdoutBytes += deliver.length;
      if (deliver.length > 0) this.options.onStdout(deliver);
    } else {
      this.stderrBytes += deliver.length;
      if (deliver.length > 0) this.options.onStderr(deliver);
      // std writes the marker as one piece of its message: shorter writes cannot hold it, and a flood of
      // them must not cost a Buffer each.
      if (
        deliver.length >= ALLOC_FAILURE_MARKER.length &&
        total < 512 &&
        !this.sawAllocFailure &&
        Buffer.from(deliver.buffer, deliver.byteOffset, deliver.length).includes(ALLOC_FAILURE_MARKER)
      ) {
        this.sawAllocFailure = true;
      }
    }
    if (total > room) {
      this.ended = new OutputLimit(`${fd === 1 ? "stdout" : "stderr"} exceeded its limit of ${cap} bytes`);
      throw this.ended;
    }
    view.setUint32(nwritten, total, true);
    return Errno.SUCCESS;
  }

  private readStdin(iovsArg: number, iovsLenArg: number, nread: number): number {
    const { view, u8 } = this.refresh();
    const iovs = iovsArg >>> 0;
    const iovsLen = iovsLenArg >>> 0;
    const stdin = this.options.stdin;
    // Refuse bad buffers before consuming any input, so a failed read loses nothing.
    if (!inBounds(u8, iovs, iovsLen * 8)) return Errno.FAULT;
    for (let i = 0; i < iovsLen; i++) {
      if (!inBounds(u8, view.getUint32(iovs + i * 8, true), view.getUint32(iovs + i * 8 + 4, true))) return Errno.FAULT;
    }
    let n = 0;
    for (let i = 0; i < iovsLen && this.stdinPos < stdin.length; i++) {
      const ptr = view.getUint32(iovs + i * 8, true);
      const len = view.getUint32(iovs + i * 8 + 4, true);
      const take = Math.min(len, stdin.length - this.stdinPos);
      u8.set(stdin.subarray(this.stdinPos, this.stdinPos + take), ptr);
      this.stdinPos += take;
      n += take;
    }
    view.setUint32(nread, n, true);
    return Errno.SUCCESS;
  }

  private clockNow(id: number): bigint | undefined {
    switch (id) {
      case Clock.REALTIME:
        return this.realtimeOffsetNs + monotonicNs();
      case Clock.MONOTONIC:
        return monotonicNs();
      case Clock.PROCESS_CPUTIME:
      case Clock.THREAD_CPUTIME: {
        // Node 20 has no per-thread CPU clock; the process clock is monotonic and real, which is what guests rely on.
        const u = process.cpuUsage();
        return BigInt(u.user + u.system) * 1000n;
      }
      default:
        return undefined;
    }
  }

  private pollOneoff(inArg: number, outArg: number, nsubsArg: number, neventsPtr: number): number {
    const inPtr = inArg >>> 0;
    const outPtr = outArg >>> 0;
    const nsubs = nsubsArg >>> 0;
    if (nsubs === 0) return Errno.INVAL;
    let { view } = this.refresh();
    const { u8 } = this.mem;
    if (!inBounds(u8, inPtr, nsubs * SUBSCRIPTION_SIZE) || !inBounds(u8, outPtr, nsubs * EVENT_SIZE)) return Errno.FAULT;
    let events = 0;
    let earliest: bigint | undefined;
    const now = monotonicNs();
    const writeEvent = (userdata: bigint, error: number, type: number, nbytes: bigint, flags: number): void => {
      const e = outPtr + events * EVENT_SIZE;
      view.setBigUint64(e, userdata, true);
      view.setUint16(e + 8, error, true);
      view.setUint8(e + 10, type);
      view.setBigUint64(e + 16, nbytes, true);
      view.setUint16(e + 24, flags, true);
      events++;
    };
    // A clock subscription's deadline on the monotonic clock, or undefined for an unknown clock.
    const deadlineOf = (s: number): bigint | undefined => {
      const clockNow = this.clockNow(view.getUint32(s + 16, true));
      if (clockNow === undefined) return undefined;
      const timeout = view.getBigUint64(s + 24, true);
      const relative = (view.getUint16(s + 40, true) & SUBCLOCK_ABSTIME) !== 0 ? timeout - clockNow : timeout;
      return now + (relative > 0n ? relative : 0n);
    };
    // First pass: fd readiness, unknown clocks, and the earliest deadline. Nothing is kept per subscription:
    // an object each let 2*10^7 subscriptions exhaust the worker's heap (red-team finding).
    for (let i = 0; i < nsubs; i++) {
      const s = inPtr + i * SUBSCRIPTION_SIZE;
      const userdata = view.getBigUint64(s, true);
      const tag = view.getUint8(s + 8);
      if (tag === EventType.CLOCK) {
        const deadline = deadlineOf(s);
        if (deadline === undefined) {
          writeEvent(userdata, Errno.INVAL, EventType.CLOCK, 0n, 0);
          continue;
        }
        if (earliest === undefined || deadline < earliest) earliest = deadline;
      } else if (tag === EventType.FD_READ || tag === EventType.FD_WRITE) {
        const fd = view.getUint32(s + 16, true);
        const r = this.fdReadiness(fd, tag);
        writeEvent(userdata, r.error, tag, r.nbytes, r.flags);
      } else {
        return Errno.INVAL;
      }
    }
    if (events === 0 && earliest !== undefined) {
      let remaining = earliest - monotonicNs();
      if (remaining > 0n) this.options.flush?.();
      while (remaining > 0n) {
        Atomics.wait(SLEEP_CELL, 0, 0, Number(remaining) / NS_PER_MS);
        remaining = earliest - monotonicNs();
      }
      view = this.refresh().view;
    }
    if (events === 0) {
      // Only clocks (all known) are left: read them again. An absolute one has expired when its clock has
      // reached it (for CPU-time clocks, which a sleep does not advance, that can be later than before). Event k never lands past subscription k's start
      // (events are smaller), so even an output array laid over the input one is read before it is written.
      const t = monotonicNs();
      for (let i = 0; i < nsubs; i++) {
        const s = inPtr + i * SUBSCRIPTION_SIZE;
        const timeout = view.getBigUint64(s + 24, true);
        const expired =
          (view.getUint16(s + 40, true) & SUBCLOCK_ABSTIME) !== 0
            ? (this.clockNow(view.getUint32(s + 16, true)) ?? 0n) >= timeout
            : now + timeout <= t;
        if (expired) writeEvent(view.getBigUint64(s, true), Errno.SUCCESS, EventType.CLOCK, 0n, 0);
      }
    }
    view.setUint32(neventsPtr, events, true);
    return Errno.SUCCESS;
  }

  private fdReadiness(fd: number, type: number): { error: number; nbytes: bigint; flags: number } {
    const stream = this.fs.stdioOf(fd);
    if (stream === 0) {
      if (type !== EventType.FD_READ) return { error: Errno.BADF, nbytes: 0n, flags: 0 };
      const left = this.options.stdin.length - this.stdinPos;
      // All of stdin is known up front, so it is always ready; at the end it reads as hang-up (EOF).
      return { error: Errno.SUCCESS, nbytes: BigInt(left), flags: left === 0 ? EVENTRW_HANGUP : 0 };
    }
    if (stream === 1 || stream === 2) {
      if (type !== EventType.FD_WRITE) return { error: Errno.BADF, nbytes: 0n, flags: 0 };
      const used = stream === 1 ? this.stdoutBytes : this.stderrBytes;
      return { error: Errno.SUCCESS, nbytes: BigInt(Math.max(0, this.options.maxOutputBytes - used)), flags: 0 };
    }
    return this.fs.readiness(fd, type);
  }

  /**
   * The `wasi_snapshot_preview1` namespace bound to `imports`: each function calls the function of
   * the host whose run is in progress, and refuses to run once that guest has ended (see `ended`).
   * Built once per worker, so a run allocates no import closures and an instance can be made before
   * its run's host exists. Guest faults are converted here, in one place. Every i32 parameter of
   * preview1 and of sandboxd_http_v1 is unsigned (pointers, lengths, fds, flags) but reaches JS
   * signed, so each is taken as its u32 first: a pointer of 2^31 or more was read as negative, which
   * some calls wrote through at the wrong place (typed-array offsets count back from the end) and
   * answered SUCCESS. And a result pointer past the end of memory, which the functions write through
   * without checking, is EFAULT, as it is for their input buffers; it was a trap that ended the run.
   */
  static bindPreview1(imports: WasiImports): WebAssembly.ModuleImports {
    return WasiHost.bind(imports, PREVIEW1_FUNCTIONS, (host) => host.table);
  }

  /** The `sandboxd_http_v1` namespace bound to `imports`, as {@link bindPreview1} binds preview1. */
  static bindHttp(imports: WasiImports): WebAssembly.ModuleImports {
    return WasiHost.bind(imports, Object.keys(HTTP_FUNCTIONS), (host) => host.httpTable);
  }

  /** Binds `names` to the same-named functions of `tableOf(host)`, as {@link bindPreview1} describes. */
  private static bind(
    imports: WasiImports,
    names: readonly string[],
    tableOf: (host: WasiHost) => WebAssembly.ModuleImports,
  ): WebAssembly.ModuleImports {
    const namespace: WebAssembly.ModuleImports = {};
    for (const name of names) {
      // Fixed parameters rather than a rest array: no allocation per guest call. No imported function takes more than nine.
      namespace[name] = (
        a: unknown,
        b: unknown,
        c: unknown,
        d: unknown,
        e: unknown,
        f: unknown,
        g: unknown,
        h: unknown,
        i: unknown,
      ): unknown => {
        const host = imports.host;
        // Only a wasm start function can get here, while an instance is made ahead of its run.
        if (host === undefined) throw new WebAssembly.RuntimeError(`${name} called with no run in progress`);
        if (host.ended !== undefined) throw host.ended;
        try {
          return (tableOf(host)[name] as (...args: unknown[]) => unknown)(
            u32(a),
            u32(b),
            u32(c),
            u32(d),
            u32(e),
            u32(f),
            u32(g),
            u32(h),
            u32(i),
          );
        } catch (error: unknown) {
          if (isGuestMemoryFault(error)) return Errno.FAULT;
          throw error;
        }
      };
    }
    return namespace;
  }

  private functions(): WebAssembly.ModuleImports {
    const fs = this.fs;
    const stdioFdstat = (fd: number, out: number): number => {
      const { view } = this.refresh();
      // Our stdio are captured streams, never terminals: UNKNOWN (like a pipe) keeps isatty() false, so
      // guests do not write colour codes into output an agent will parse.
      view.setUint8(out, Filetype.UNKNOWN);
      view.setUint16(out + 2, 0, true);
      const base = fd === 0 ? STDIO_RIGHTS & ~Rights.FD_WRITE : STDIO_RIGHTS & ~Rights.FD_READ;
      view.setBigUint64(out + 8, base, true);
      view.setBigUint64(out + 16, 0n, true);
      return Errno.SUCCESS;
    };
    return {
      args_get: (argv: number, buf: number) => this.writeStrings(this.argv, argv, buf),
      args_sizes_get: (argc: number, size: number) => {
        const { view } = this.refresh();
        view.setUint32(argc, this.argv.offsets.length, true);
        view.setUint32(size, this.argv.bytes.length, true);
        return Errno.SUCCESS;
      },
      environ_get: (env: number, buf: number) => this.writeStrings(this.environ, env, buf),
      environ_sizes_get: (count: number, size: number) => {
        const { view } = this.refresh();
        view.setUint32(count, this.environ.offsets.length, true);
        view.setUint32(size, this.environ.bytes.length, true);
        return Errno.SUCCESS;
      },
      clock_res_get: (id: number, out: number) => {
        if (id < 0 || id > Clock.THREAD_CPUTIME) return Errno.INVAL;
        const res = id === Clock.PROCESS_CPUTIME || id === Clock.THREAD_CPUTIME ? 1000n : 1n;
        this.refresh().view.setBigUint64(out, res, true);
        return Errno.SUCCESS;
      },
      clock_time_get: (id: number, _precision: bigint, out: number) => {
        const t = this.clockNow(id);
        if (t === undefined) return Errno.INVAL;
        this.refresh().view.setBigUint64(out, t & U64_MAX, true);
        return Errno.SUCCESS;
      },
      random_get: (bufArg: number, lenArg: number) => {
        const { u8 } = this.refresh();
        const buf = bufArg >>> 0;
        const len = lenArg >>> 0;
        if (!inBounds(u8, buf, len)) return Errno.FAULT;
        // randomFillSync refuses more than 2^31-1 bytes at once; guests ask for far less, but stay correct.
        for (let off = 0; off < len; off += 65_536) randomFillSync(u8, buf + off, Math.min(65_536, len - off));
        return Errno.SUCCESS;
      },
      proc_exit: (code: number) => {
        this.ended = new ProcExit(code >>> 0);
        throw this.ended;
      },
      proc_raise: (_sig: number) => Errno.NOSYS,
      sched_yield: () => Errno.SUCCESS,
      poll_oneoff: (inPtr: number, outPtr: number, nsubs: number, nevents: number) => this.pollOneoff(inPtr, outPtr, nsubs, nevents),

      fd_write: (fd: number, iovs: number, iovsLen: number, nwritten: number) => {
        const stream = fs.stdioOf(fd);
        if (stream === 1 || stream === 2) return this.writeOut(stream, iovs, iovsLen, nwritten);
        if (stream === 0) return Errno.BADF;
        return fs.fd_write(fd, iovs, iovsLen, nwritten);
      },
      fd_read: (fd: number, iovs: number, iovsLen: number, nread: number) => {
        const stream = fs.stdioOf(fd);
        if (stream === 0) return this.readStdin(iovs, iovsLen, nread);
        if (stream > 0) return Errno.BADF;
        return fs.fd_read(fd, iovs, iovsLen, nread);
      },
      fd_fdstat_get: (fd: number, out: number) => (fs.stdioOf(fd) >= 0 ? stdioFdstat(fs.stdioOf(fd), out) : fs.fd_fdstat_get(fd, out)),
      fd_fdstat_set_flags: (fd: number, flags: number) =>
        fs.stdioOf(fd) >= 0 ? (flags === 0 ? Errno.SUCCESS : Errno.NOTSUP) : fs.fd_fdstat_set_flags(fd, flags),
      fd_fdstat_set_rights: (fd: number, base: bigint, inh: bigint) =>
        fs.stdioOf(fd) >= 0 ? Errno.SUCCESS : fs.fd_fdstat_set_rights(fd, base, inh),
      fd_filestat_get: (fd: number, out: number) => {
        if (fs.stdioOf(fd) < 0) return fs.fd_filestat_get(fd, out);
        const { u8, view } = this.refresh();
        u8.fill(0, out, out + 64);
        view.setUint8(out + 16, Filetype.UNKNOWN);
        return Errno.SUCCESS;
      },
      fd_close: (fd: number) => fs.fd_close(fd),
      fd_seek: (fd: number, offset: bigint, whence: number, out: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.SPIPE : fs.fd_seek(fd, offset, whence, out),
      fd_tell: (fd: number, out: number) => (fs.stdioOf(fd) >= 0 ? Errno.SPIPE : fs.fd_tell(fd, out)),
      fd_advise: (fd: number, offset: bigint, len: bigint, advice: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.SPIPE : fs.fd_advise(fd, offset, len, advice),
      fd_allocate: (fd: number, offset: bigint, len: bigint) => (fs.stdioOf(fd) >= 0 ? Errno.NOTSUP : fs.fd_allocate(fd, offset, len)),
      fd_datasync: (fd: number) => (fs.stdioOf(fd) >= 0 ? Errno.INVAL : fs.fd_datasync(fd)),
      fd_sync: (fd: number) => (fs.stdioOf(fd) >= 0 ? Errno.INVAL : fs.fd_sync(fd)),
      fd_filestat_set_size: (fd: number, size: bigint) => (fs.stdioOf(fd) >= 0 ? Errno.INVAL : fs.fd_filestat_set_size(fd, size)),
      fd_filestat_set_times: (fd: number, atim: bigint, mtim: bigint, flags: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.NOTCAPABLE : fs.fd_filestat_set_times(fd, atim, mtim, flags),
      fd_pread: (fd: number, iovs: number, iovsLen: number, offset: bigint, nread: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.SPIPE : fs.fd_pread(fd, iovs, iovsLen, offset, nread),
      fd_pwrite: (fd: number, iovs: number, iovsLen: number, offset: bigint, nwritten: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.SPIPE : fs.fd_pwrite(fd, iovs, iovsLen, offset, nwritten),
      fd_prestat_get: (fd: number, out: number) => fs.fd_prestat_get(fd, out),
      fd_prestat_dir_name: (fd: number, path: number, len: number) => fs.fd_prestat_dir_name(fd, path, len),
      fd_readdir: (fd: number, buf: number, len: number, cookie: bigint, out: number) =>
        fs.stdioOf(fd) >= 0 ? Errno.NOTDIR : fs.fd_readdir(fd, buf, len, cookie, out),
      fd_renumber: (from: number, to: number) => fs.fd_renumber(from, to),
      path_create_directory: (fd: number, p: number, l: number) => fs.path_create_directory(fd, p, l),
      path_filestat_get: (fd: number, flags: number, p: number, l: number, out: number) => fs.path_filestat_get(fd, flags, p, l, out),
      path_filestat_set_times: (fd: number, flags: number, p: number, l: number, atim: bigint, mtim: bigint, fst: number) =>
        fs.path_filestat_set_times(fd, flags, p, l, atim, mtim, fst),
      path_link: (ofd: number, oflags: number, op: number, ol: number, nfd: number, np: number, nl: number) =>
        fs.path_link(ofd, oflags, op, ol, nfd, np, nl),
      path_open: (
        fd: number,
        dirflags: number,
        p: number,
        l: number,
        oflags: number,
        base: bigint,
        inh: bigint,
        fdflags: number,
        out: number,
      ) => fs.path_open(fd, dirflags, p, l, oflags, base, inh, fdflags, out),
      path_readlink: (fd: number, p: number, l: number, buf: number, bufLen: number, out: number) =>
        fs.path_readlink(fd, p, l, buf, bufLen, out),
      path_remove_directory: (fd: number, p: number, l: number) => fs.path_remove_directory(fd, p, l),
      path_rename: (fd: number, op: number, ol: number, nfd: number, np: number, nl: number) => fs.path_rename(fd, op, ol, nfd, np, nl),
      path_symlink: (op: number, ol: number, fd: number, np: number, nl: number) => fs.path_symlink(op, ol, fd, np, nl),
      path_unlink_file: (fd: number, p: number, l: number) => fs.path_unlink_file(fd, p, l),
      // Sockets are never granted (a network grant is outbound HTTP through sandboxd_http_v1, each request vetted):
      // accepting is the capability we withhold (ENOTCAPABLE); and since no descriptor can ever be a socket, the
      // calls on an existing one say so (ENOTSOCK), as the suite expects.
      sock_accept: (fd: number, _flags: number, _out: number) => (fs.isOpen(fd) ? Errno.NOTCAPABLE : Errno.BADF),
      sock_recv: (fd: number, _a: number, _b: number, _c: number, _d: number, _e: number) => (fs.isOpen(fd) ? Errno.NOTSOCK : Errno.BADF),
      sock_send: (fd: number, _a: number, _b: number, _c: number, _d: number) => (fs.isOpen(fd) ? Errno.NOTSOCK : Errno.BADF),
      sock_shutdown: (fd: number, _how: number) => (fs.isOpen(fd) ? Errno.NOTSOCK : Errno.BADF),
    };
  }
}

/**
 * An import object for instances of any module, whose functions call the host of the run in progress
 * (see WasiHost.runWith). A worker keeps one for its life; an instance made with it runs at most once.
 */
export class WasiImports {
  /** The host whose run is in progress; undefined between runs. */
  host: WasiHost | undefined = undefined;
  /** The `wasi_snapshot_preview1` namespace to instantiate with. */
  readonly functions: WebAssembly.ModuleImports = WasiHost.bindPreview1(this);
  /** The `sandboxd_http_v1` namespace to instantiate with. */
  readonly http: WebAssembly.ModuleImports = WasiHost.bindHttp(this);
}
