/**
 * Entry point of a pool worker thread. It keeps compiled modules it was sent,
 * runs one guest at a time through our WASI host, and reports back. Everything
 * the guest can do happens synchronously here; the main thread enforces time by
 * terminating this thread. Runs arrive through shared memory (see RunChannel);
 * the import object and output blocks live as long as the worker, and the next
 * instance of the last module (with a fresh memory) is made while idle. A
 * guest's state never outlives its run: an instance and its memory run once.
 */
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { MAX_DENIALS, STREAM_FLUSH_BYTES, STREAM_FLUSH_INTERVAL_MS, STREAM_WINDOW_BYTES } from "../limits.js";
import { elapsedUs } from "../elapsed.js";
import type { Denial } from "./execution.js";
import { HttpChannelClient } from "./net/http-channel.js";
import { waitAndCharge } from "./stream-window.js";
import { HTTP_MODULE } from "./net/http-abi.js";
import { WASI_MODULE } from "./wasi/abi.js";
import { WasiHost, WasiImports } from "./wasi/host.js";
import type { WasiRunResult } from "./wasi/types.js";
import { fuelConsumed, fuelExhausted, startMetered } from "./wasm/fuel-meter.js";
import { MEMORY_IMPORT_MODULE, MEMORY_IMPORT_NAME } from "./wasm/memory-cap.js";
import {
  CONTROL_HEADER_BYTES,
  CONTROL_STATE,
  CONTROL_STDIN_BYTES,
  CONTROL_VIA_PORT,
  IDLE,
  REQUEST_AREA_BYTES,
  REQUEST_AREA_OFFSET,
  REQUEST_READY,
  type EvictMessage,
  type FromWorker,
  type RunChannel,
  type RunHeader,
  type RunMessage,
  type WorkerRunResult,
} from "./worker-protocol.js";

/** Data the pool gives each worker at start. */
export interface WorkerInit extends RunChannel {
  /** The process's namespace lock, which orders guests' renames against other guests' path operations. */
  readonly namespaceLock: Int32Array;
}

const port = parentPort;
if (!port) throw new Error("worker.ts must run in a worker thread");
const init = workerData as WorkerInit;
const modules = new Map<string, WebAssembly.Module>();

function post(message: FromWorker): void {
  port!.postMessage(message);
}

/**
 * How Rust's std announces a panic on stderr (1.63: "thread 'main' panicked at 'msg', file:line";
 * newer: "thread 'main' panicked at file:line:"). On WASI a panic then aborts, which is a wasm trap.
 */
const RUST_PANIC_PATTERN = /thread '[^']*' panicked at /;

/** How much of the end of stderr is kept to find a panic message split across writes. */
const PANIC_SCAN_CHARS = 256;

/** The exit code native Rust gives a panicking main; we report WASI panics the same way. */
export const RUST_PANIC_EXIT_CODE = 101;

/**
 * Writes smaller than this are copied into a shared block rather than kept one by one: 16 Mi one-byte
 * writes kept as 16 Mi typed arrays exhausted the worker's heap, so the run died as a trap with all its
 * output lost instead of ending at the output cap.
 */
const COALESCE_BELOW_BYTES = 4096;
/** Size of the block small writes are copied into. */
const BLOCK_BYTES = 64 * 1024;
/** Longest an idle worker waits for a run before giving its event loop a turn. */
const IDLE_WAIT_SLICE_MS = 1_000;
const EMPTY = new Uint8Array(0);

/**
 * Collects one stream's output: all of it for Execute, or flushed in batches for StreamOutput.
 * One per stream per worker, reset for each run: small writes go into a block allocated once, and
 * what a run produced leaves as one buffer of exactly its size.
 */
class OutputSink {
  private chunks: Uint8Array[] = [];
  private readonly block = new Uint8Array(BLOCK_BYTES);
  private blockUsed = 0;
  private buffered = 0;
  private lastFlushMs = Number.NEGATIVE_INFINITY;
  private runId = 0;
  /** The run's stream window when output is streamed; undefined when it is returned at the end. */
  private window: Int32Array | undefined;
  /** Set once the guest printed a Rust panic message here. */
  panicked = false;
  /**
   * The last stderr bytes, for the panic scan: kept as bytes in a block of twice the scan width that is
   * shifted once per width, so a flood of one-byte writes costs a byte copy each, not a string each.
   */
  private readonly tail = new Uint8Array(2 * PANIC_SCAN_CHARS);
  private tailUsed = 0;

  constructor(private readonly fd: 1 | 2) {}

  /** Starts a run: forgets everything of the previous one. */
  reset(runId: number, window: Int32Array | undefined): void {
    this.chunks = [];
    this.blockUsed = 0;
    this.buffered = 0;
    this.lastFlushMs = Number.NEGATIVE_INFINITY;
    this.runId = runId;
    this.window = window;
    this.panicked = false;
    this.tailUsed = 0;
  }

  write(bytes: Uint8Array): void {
    if (this.fd === 2 && !this.panicked) {
      // std writes its panic message in many small unbuffered writes: match across them.
      this.keepTail(bytes);
      // The pattern ends in a space, so only a write holding one can complete it: a flood of
      // one-byte writes must not cost a regex search each.
      if (bytes.includes(0x20)) {
        const from = Math.max(0, this.tailUsed - PANIC_SCAN_CHARS);
        this.panicked = RUST_PANIC_PATTERN.test(Buffer.from(this.tail.buffer, from, this.tailUsed - from).toString("latin1"));
      }
    }
    if (bytes.byteLength < COALESCE_BELOW_BYTES) {
      if (this.blockUsed + bytes.byteLength > BLOCK_BYTES) this.seal();
      this.block.set(bytes, this.blockUsed);
      this.blockUsed += bytes.byteLength;
    } else {
      this.seal();
      this.chunks.push(bytes);
    }
    this.buffered += bytes.byteLength;
    if (this.window === undefined) return;
    // Batch bursts of small writes, but let a write after a quiet spell out at once,
    // so a consumer sees the first line of a slow script as soon as it is written.
    const now = performance.now();
    if (this.buffered >= STREAM_FLUSH_BYTES || now - this.lastFlushMs >= STREAM_FLUSH_INTERVAL_MS) this.flush(now);
  }

  private keepTail(bytes: Uint8Array): void {
    if (bytes.byteLength >= PANIC_SCAN_CHARS) {
      this.tail.set(bytes.subarray(bytes.byteLength - PANIC_SCAN_CHARS));
      this.tailUsed = PANIC_SCAN_CHARS;
      return;
    }
    if (this.tailUsed + bytes.byteLength > this.tail.byteLength) {
      this.tail.copyWithin(0, this.tailUsed - PANIC_SCAN_CHARS, this.tailUsed);
      this.tailUsed = PANIC_SCAN_CHARS;
    }
    this.tail.set(bytes, this.tailUsed);
    this.tailUsed += bytes.byteLength;
  }

  flush(now = performance.now()): void {
    this.lastFlushMs = now;
    if (this.buffered === 0) return;
    const data = this.take();
    // A reader that does not keep up makes the guest wait here, inside its write, instead of the daemon buffering.
    if (this.window !== undefined) waitAndCharge(this.window, data.byteLength, STREAM_WINDOW_BYTES);
    // take() returns a buffer nobody else holds: move it instead of copying it.
    port!.postMessage({ type: "output", runId: this.runId, fd: this.fd, data } satisfies FromWorker, [data.buffer as ArrayBuffer]);
  }

  /** Moves what the block holds, if anything, to the chunks as an exact copy (keeping write order). */
  private seal(): void {
    if (this.blockUsed === 0) return;
    this.chunks.push(this.block.slice(0, this.blockUsed));
    this.blockUsed = 0;
  }

  /** Everything not yet flushed, as one buffer of its own (never a view of a larger one: posting that copies all of it). */
  take(): Uint8Array {
    let data: Uint8Array;
    if (this.chunks.length === 0) {
      data = this.blockUsed === 0 ? EMPTY : this.block.slice(0, this.blockUsed);
    } else {
      this.seal();
      data = this.chunks[0]!;
      if (this.chunks.length > 1 || data.byteLength !== data.buffer.byteLength) {
        data = new Uint8Array(this.buffered);
        let offset = 0;
        for (const chunk of this.chunks) {
          data.set(chunk, offset);
          offset += chunk.byteLength;
        }
      }
    }
    this.chunks = [];
    this.blockUsed = 0;
    this.buffered = 0;
    return data;
  }
}

/** What a worker keeps between runs: never any state of a guest, only zeroed memory and an instance that has not run. */
interface MemorySpec {
  readonly initial: number;
  readonly maximum: number;
}
/** An instance made while idle, for the next run of `key` under `spec`; taken (and so never run twice) by that run. */
let ahead:
  | {
      readonly key: string;
      readonly spec: MemorySpec | undefined;
      readonly instance: WebAssembly.Instance;
      readonly memory: WebAssembly.Memory | undefined;
    }
  | undefined;
/** The module and memory of the last run: what to instantiate ahead. */
let last: { readonly key: string; readonly spec: MemorySpec | undefined; readonly ahead: boolean } | undefined;

const imports = new WasiImports();
const stdout = new OutputSink(1);
const stderr = new OutputSink(2);

function sameSpec(a: MemorySpec | undefined, b: MemorySpec | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.initial === b.initial && a.maximum === b.maximum);
}

/**
 * A fresh memory for every instance. Reusing one (zeroed) took a third of the daemon's CPU per run
 * off, but V8 then collects dead instances, whose native memory it does not count, far less often:
 * a warm daemon's RSS settled ~110 MB higher.
 */
function freshMemory(spec: MemorySpec | undefined): WebAssembly.Memory | undefined {
  return spec === undefined ? undefined : new WebAssembly.Memory(spec);
}

function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory | undefined): WebAssembly.Instance {
  const namespaces: WebAssembly.Imports = { [WASI_MODULE]: imports.functions, [HTTP_MODULE]: imports.http };
  if (memory !== undefined) namespaces[MEMORY_IMPORT_MODULE] = { [MEMORY_IMPORT_NAME]: memory };
  return new WebAssembly.Instance(module, namespaces);
}

/** While idle: makes the next instance of the last run's module, off the next run's critical path. */
function prepareNext(): void {
  if (last === undefined || !last.ahead || ahead !== undefined) return;
  const module = modules.get(last.key);
  if (module === undefined) return;
  const memory = freshMemory(last.spec);
  try {
    ahead = { key: last.key, spec: last.spec, instance: instantiate(module, memory), memory };
  } catch {
    // The run will instantiate again and report what went wrong as its own outcome.
  }
}

/** A panic is a program's failure, not the sandbox's: it is reported as native Rust would (exit 101). */
function panicAsExit(result: WasiRunResult, panicked: boolean): WorkerRunResult {
  return result.outcome === "trap" && panicked ? { outcome: "exited", exitCode: RUST_PANIC_EXIT_CODE } : result;
}

/** The fuel budget of one metered run: set before any guest code runs, read when it ends. */
class FuelMeter {
  private instance: WebAssembly.Instance | undefined;
  private readonly limit: bigint;

  constructor(limit: number) {
    this.limit = BigInt(limit);
  }

  /** Sets the instance's budget and runs its start function, if any (see startMetered). */
  start(instance: WebAssembly.Instance): void {
    this.instance = instance;
    startMetered(instance, this.limit);
  }

  /** The run's outcome if its trap was its fuel running out; undefined otherwise. */
  exhausted(result: WasiRunResult): WorkerRunResult | undefined {
    if (result.outcome !== "trap" || this.instance === undefined || !fuelExhausted(this.instance)) return undefined;
    return {
      outcome: "fuel_exhausted",
      message: `the guest used up its fuel limit of ${this.limit} (${this.consumed()} consumed at the check that stopped it)`,
    };
  }

  /** Fuel consumed so far; 0 if the instance was never made. */
  consumed(): number {
    return this.instance === undefined ? 0 : Number(fuelConsumed(this.instance, this.limit));
  }
}

function run(message: RunMessage): void {
  if (message.module) modules.set(message.moduleKey, message.module);
  const module = modules.get(message.moduleKey);
  const stream = message.streamWindow !== undefined;
  stdout.reset(message.runId, message.streamWindow);
  stderr.reset(message.runId, message.streamWindow);
  const denials: Denial[] = [];
  let deniedBeyondCap = 0;
  const spec = message.memory;
  let instance: WebAssembly.Instance | undefined;
  if (ahead !== undefined) {
    // An instance made ahead serves exactly one run; one made for another module or size is dropped unrun.
    if (ahead.key === message.moduleKey && sameSpec(ahead.spec, spec)) instance = ahead.instance;
    ahead = undefined;
  }
  last = { key: message.moduleKey, spec, ahead: message.instantiateAhead };
  const fuel = message.fuelLimit > 0 ? new FuelMeter(message.fuelLimit) : undefined;
  const started = performance.now();
  const hostResult = module
    ? new WasiHost({
        args: message.argv,
        env: message.env,
        stdin: message.stdin,
        mounts: message.mounts,
        memoryLimitBytes: message.memoryLimitBytes,
        maxOutputBytes: message.maxOutputBytes,
        maxWriteBytes: message.maxWriteBytes,
        maxCreatedEntries: message.maxCreatedEntries,
        namespaceLock: init.namespaceLock,
        ...(message.http
          ? { http: new HttpChannelClient(message.http.channel, started + message.http.timeoutMs, message.http.timeoutMs) }
          : {}),
        onStdout: (bytes) => stdout.write(bytes),
        onStderr: (bytes) => stderr.write(bytes),
        onDenial: (denial) => {
          if (denials.length >= MAX_DENIALS) {
            deniedBeyondCap++;
            return;
          }
          denials.push(denial);
          if (stream) post({ type: "denial", runId: message.runId, denial });
        },
        flush: () => {
          stdout.flush();
          stderr.flush();
        },
      }).runWith(imports, () => {
        const fresh = instance ?? instantiate(module, freshMemory(spec));
        // A metered instance (made now or ahead) has run no guest code yet: its budget is set before any does.
        fuel?.start(fresh);
        return fresh;
      })
    : ({ outcome: "trap", message: `internal: module ${message.moduleKey} was never sent to this worker` } as const);
  const durationUs = elapsedUs(started);
  message.http?.channel.port.close();
  const result = fuel?.exhausted(hostResult) ?? panicAsExit(hostResult, stderr.panicked);
  if (stream) {
    stdout.flush();
    stderr.flush();
  }
  const out = stream ? EMPTY : stdout.take();
  const err = stream ? EMPTY : stderr.take();
  // Both are buffers of their own (or the shared empty one): move them instead of copying.
  const transfer = [out, err].filter((b) => b.byteLength > 0).map((b) => b.buffer as ArrayBuffer);
  port!.postMessage(
    {
      type: "done",
      runId: message.runId,
      result,
      fuelConsumed: fuel?.consumed() ?? 0,
      stdout: out,
      stderr: err,
      denials,
      deniedBeyondCap,
      durationUs,
    } satisfies FromWorker,
    transfer,
  );
}

const channel: RunChannel = init;
const control = new Int32Array(channel.shared, 0, REQUEST_AREA_OFFSET / Int32Array.BYTES_PER_ELEMENT);
const area = Buffer.from(channel.shared, REQUEST_AREA_OFFSET, REQUEST_AREA_BYTES);

/** The request the main thread put in place. */
function takeRequest(): RunMessage {
  if (Atomics.load(control, CONTROL_VIA_PORT) === 1) {
    const received = receiveMessageOnPort(channel.port);
    if (received === undefined) throw new Error("internal: a run request was announced but none was posted");
    return received.message as RunMessage;
  }
  const headerBytes = Atomics.load(control, CONTROL_HEADER_BYTES);
  const stdinBytes = Atomics.load(control, CONTROL_STDIN_BYTES);
  const header = JSON.parse(area.toString("utf8", 0, headerBytes)) as RunHeader;
  // A view, not a copy: the main thread writes the area again only after this run is done (a successor worker gets its own).
  const stdin = new Uint8Array(channel.shared, REQUEST_AREA_OFFSET + headerBytes, stdinBytes);
  return { type: "run", ...header, env: new Map(header.env), stdin };
}

/**
 * Waits for runs in Atomics.wait rather than in the event loop: a futex wake-up is much cheaper than a
 * message. After each run, and at least every IDLE_WAIT_SLICE_MS, the event loop gets a turn, so evict
 * messages and V8's own tasks are handled; terminate() interrupts the wait.
 */
function serve(): void {
  Atomics.wait(control, CONTROL_STATE, IDLE, IDLE_WAIT_SLICE_MS);
  if (Atomics.load(control, CONTROL_STATE) !== REQUEST_READY) {
    setImmediate(serve);
    return;
  }
  const message = takeRequest();
  Atomics.store(control, CONTROL_STATE, IDLE);
  run(message);
  setImmediate(() => {
    prepareNext();
    serve();
  });
}

port.on("message", (message: EvictMessage) => {
  modules.delete(message.moduleKey);
  if (ahead?.key === message.moduleKey) ahead = undefined;
});
post({ type: "ready" });
serve();
