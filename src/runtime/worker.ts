/**
 * Entry point of a pool worker thread. It keeps compiled modules it was sent,
 * runs one guest at a time through our WASI host, and reports back. Everything
 * the guest can do happens synchronously here; the main thread enforces time by
 * terminating this thread.
 */
import { parentPort, workerData } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { MAX_DENIALS, STREAM_FLUSH_BYTES, STREAM_FLUSH_INTERVAL_MS, STREAM_WINDOW_BYTES } from "../limits.js";
import { elapsedUs } from "../elapsed.js";
import type { Denial } from "./execution.js";
import { HttpChannelClient } from "./net/http-channel.js";
import { waitAndCharge } from "./stream-window.js";
import { WasiHost, type WasiRunResult } from "./wasi/host.js";
import { fuelConsumed, fuelExhausted, startMetered } from "./wasm/fuel-meter.js";
import type { FromWorker, RunMessage, ToWorker, WorkerRunResult } from "./worker-protocol.js";

/** Data the pool gives each worker at start. */
export interface WorkerInit {
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
 * output lost instead of ending at the output cap (red-team finding).
 */
const COALESCE_BELOW_BYTES = 4096;
/** Size of the blocks small writes are copied into. */
const BLOCK_BYTES = 64 * 1024;

/** Collects one stream's output: all of it for Execute, or flushed in batches for StreamOutput. */
class OutputSink {
  private chunks: Uint8Array[] = [];
  private block: Uint8Array | undefined;
  private blockUsed = 0;
  private buffered = 0;
  private lastFlushMs = Number.NEGATIVE_INFINITY;
  /** Set once the guest printed a Rust panic message here. */
  panicked = false;
  private tail = "";

  constructor(
    private readonly runId: number,
    private readonly fd: 1 | 2,
    /** The run's stream window when output is streamed; undefined when it is returned at the end. */
    private readonly window: Int32Array | undefined,
  ) {}

  write(bytes: Uint8Array): void {
    if (this.fd === 2 && !this.panicked) {
      // std writes its panic message in many small unbuffered writes: match across them.
      this.tail = (this.tail + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")).slice(-PANIC_SCAN_CHARS);
      this.panicked = RUST_PANIC_PATTERN.test(this.tail);
    }
    if (bytes.byteLength < COALESCE_BELOW_BYTES) {
      if (this.block === undefined || this.blockUsed + bytes.byteLength > this.block.byteLength) {
        this.seal();
        this.block = new Uint8Array(BLOCK_BYTES);
      }
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

  flush(now = performance.now()): void {
    this.lastFlushMs = now;
    if (this.buffered === 0) return;
    const data = this.take();
    // A reader that does not keep up makes the guest wait here, inside its write, instead of the daemon buffering.
    if (this.window !== undefined) waitAndCharge(this.window, data.byteLength, STREAM_WINDOW_BYTES);
    // take() returns a buffer nobody else holds: move it instead of copying it.
    port!.postMessage({ type: "output", runId: this.runId, fd: this.fd, data } satisfies FromWorker, [data.buffer as ArrayBuffer]);
  }

  /** Moves the partly filled block, if any, to the chunks (keeping write order). */
  private seal(): void {
    if (this.block !== undefined && this.blockUsed > 0) this.chunks.push(this.block.subarray(0, this.blockUsed));
    this.block = undefined;
    this.blockUsed = 0;
  }

  /** Everything not yet flushed, as one buffer. */
  take(): Uint8Array {
    this.seal();
    // One exact-size buffer (the host's chunks are exact already): Buffer.concat would
    // hand out a slice of its shared pool, and posting that copies the whole pool.
    let data = this.chunks[0] ?? new Uint8Array(0);
    if (this.chunks.length > 1 || data.byteLength !== data.buffer.byteLength) {
      data = new Uint8Array(this.buffered);
      let offset = 0;
      for (const chunk of this.chunks) {
        data.set(chunk, offset);
        offset += chunk.byteLength;
      }
    }
    this.chunks = [];
    this.buffered = 0;
    return data;
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
    return { outcome: "fuel_exhausted", message: `the guest used up its fuel limit of ${this.limit} (${this.consumed()} consumed at the check that stopped it)` };
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
  const stdout = new OutputSink(message.runId, 1, message.streamWindow);
  const stderr = new OutputSink(message.runId, 2, message.streamWindow);
  const denials: Denial[] = [];
  let deniedBeyondCap = 0;
  const fuel = message.fuelLimit > 0 ? new FuelMeter(message.fuelLimit) : undefined;
  const started = performance.now();
  const hostResult = module
    ? new WasiHost({
        args: message.argv,
        env: message.env,
        stdin: message.stdin,
        mounts: message.mounts,
        memoryLimitBytes: message.memoryLimitBytes,
        ...(message.memory ? { memory: message.memory } : {}),
        maxOutputBytes: message.maxOutputBytes,
        maxWriteBytes: message.maxWriteBytes,
        maxCreatedEntries: message.maxCreatedEntries,
        namespaceLock: init.namespaceLock,
        ...(message.http ? { http: new HttpChannelClient(message.http.channel, started + message.http.timeoutMs, message.http.timeoutMs) } : {}),
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
      }).run(module, fuel && ((instance) => fuel.start(instance)))
    : ({ outcome: "trap", message: `internal: module ${message.moduleKey} was never sent to this worker` } as const);
  const durationUs = elapsedUs(started);
  message.http?.channel.port.close();
  const result = fuel?.exhausted(hostResult) ?? panicAsExit(hostResult, stderr.panicked);
  if (stream) {
    stdout.flush();
    stderr.flush();
  }
  post({
    type: "done",
    runId: message.runId,
    result,
    stdout: stream ? new Uint8Array(0) : stdout.take(),
    stderr: stream ? new Uint8Array(0) : stderr.take(),
    denials,
    deniedBeyondCap,
    durationUs,
    fuelConsumed: fuel?.consumed() ?? 0,
  });
}

port.on("message", (message: ToWorker) => {
  if (message.type === "evict") modules.delete(message.moduleKey);
  else run(message);
});
post({ type: "ready" });
