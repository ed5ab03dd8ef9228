import { Worker } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { SandboxError } from "../errors/sandbox-error.js";
import { elapsedUs } from "../elapsed.js";
import type { Logger } from "../logger.js";
import { MAX_QUEUED_EXECUTIONS } from "../limits.js";
import type { Denial, RunListener, RunResult } from "./execution.js";
import { FD_REGISTRY_SLOTS, releaseHostFds } from "./wasi/host.js";
import type { WorkerInit } from "./worker.js";
import type { FromWorker, GuestParameters, RunMessage } from "./worker-protocol.js";

/**
 * V8 heap ceiling of one worker. Guest linear memory is not on this heap (the
 * module's own maximum caps it); this bounds the host side (output buffers,
 * fd tables) so a runaway can only kill its own worker.
 */
const WORKER_MAX_OLD_GENERATION_MB = 512;

/** One job for the pool: a compiled module plus everything its run needs. */
export interface PoolJob extends GuestParameters {
  readonly module: WebAssembly.Module;
  readonly timeoutMs: number;
  readonly listener?: RunListener;
  readonly signal?: AbortSignal;
}

interface Slot {
  worker: Worker;
  fdRegistry: Int32Array;
  /** Module keys this worker already holds. */
  readonly modules: Set<string>;
  ready: Promise<void>;
  job?: ActiveJob;
}

interface ActiveJob {
  readonly runId: number;
  readonly job: PoolJob;
  readonly startedMs: number;
  readonly resolve: (result: RunResult) => void;
  readonly cleanup: () => void;
}

interface QueuedJob {
  readonly job: PoolJob;
  readonly resolve: (result: RunResult) => void;
  readonly onAbort: () => void;
}

const EMPTY = new Uint8Array(0);

/**
 * A fixed set of warm worker threads running guests one at a time each.
 * Time limits and cancellation terminate the worker (the only way to stop a
 * synchronous guest) and a fresh one takes its slot; any host fds the dead
 * worker held are closed through the shared fd registry.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: QueuedJob[] = [];
  private nextRunId = 1;
  private closed = false;

  constructor(
    private readonly size: number,
    private readonly logger: Logger,
  ) {}

  /** Starts the workers and waits until each has loaded. */
  async start(): Promise<void> {
    for (let i = 0; i < this.size; i++) this.slots.push(this.spawn());
    await Promise.all(this.slots.map((s) => s.ready));
  }

  /** Runs a job on the next free worker. Rejects only when the queue is full or the pool is closed. */
  run(job: PoolJob): Promise<RunResult> {
    if (this.closed) return Promise.reject(new SandboxError("SHUTTING_DOWN", "the daemon is shutting down"));
    if (job.signal?.aborted) return Promise.resolve(ended("cancelled", "cancelled before it started", 0));
    const free = this.slots.find((s) => !s.job);
    if (free) return new Promise((resolve) => this.dispatch(free, job, resolve));
    if (this.queue.length >= MAX_QUEUED_EXECUTIONS) {
      return Promise.reject(new SandboxError("EXECUTION_QUEUE_FULL", `${this.queue.length} executions are already waiting for a worker`));
    }
    return new Promise((resolve) => {
      const queued: QueuedJob = {
        job,
        resolve,
        onAbort: () => {
          const i = this.queue.indexOf(queued);
          if (i >= 0) this.queue.splice(i, 1);
          resolve(ended("cancelled", "cancelled while waiting for a worker", 0));
        },
      };
      job.signal?.addEventListener("abort", queued.onAbort, { once: true });
      this.queue.push(queued);
    });
  }

  /** Tells every worker to drop a module the registry evicted. */
  evict(moduleKey: string): void {
    for (const slot of this.slots) {
      if (slot.modules.delete(moduleKey)) slot.worker.postMessage({ type: "evict", moduleKey });
    }
  }

  /** Cancels queued and running jobs and stops every worker. */
  async close(): Promise<void> {
    this.closed = true;
    for (const queued of this.queue.splice(0)) {
      queued.job.signal?.removeEventListener("abort", queued.onAbort);
      queued.resolve(ended("cancelled", "the daemon is shutting down", 0));
    }
    await Promise.all(
      this.slots.map(async (slot) => {
        this.finish(slot, ended("cancelled", "the daemon is shutting down", 0));
        await slot.worker.terminate();
        releaseHostFds(slot.fdRegistry);
      }),
    );
  }

  private spawn(): Slot {
    const slot: Slot = { worker: undefined as unknown as Worker, fdRegistry: new Int32Array(0), modules: new Set(), ready: Promise.resolve() };
    this.attachWorker(slot);
    return slot;
  }

  /** Starts a fresh worker (with a fresh fd registry) in `slot` and routes its events there. */
  private attachWorker(slot: Slot): void {
    const fdRegistry = new Int32Array(new SharedArrayBuffer(FD_REGISTRY_SLOTS * Int32Array.BYTES_PER_ELEMENT));
    const init: WorkerInit = { fdRegistry };
    const worker = new Worker(new URL("./worker.js", import.meta.url), {
      workerData: init,
      resourceLimits: { maxOldGenerationSizeMb: WORKER_MAX_OLD_GENERATION_MB },
      // The guest must never reach the daemon's own stdio or environment.
      stdout: true,
      stderr: true,
      stdin: false,
      env: {},
    });
    slot.worker = worker;
    slot.fdRegistry = fdRegistry;
    slot.modules.clear();
    slot.ready = new Promise((resolve, reject) => {
      worker.once("error", reject);
      worker.on("message", (m: FromWorker) => {
        if (m.type !== "ready") return;
        worker.off("error", reject);
        resolve();
      });
    });
    // Nothing should appear on the worker's own stdio; if the host ever logs,
    // it goes to our log instead of blocking the worker on a full pipe.
    worker.stdout.on("data", (d: Buffer) => this.logger.debug("worker stdout", { data: d.toString() }));
    worker.stderr.on("data", (d: Buffer) => this.logger.warn("worker stderr", { data: d.toString() }));
    worker.on("message", (m: FromWorker) => this.onMessage(slot, m));
    worker.on("error", (e: Error) => {
      // The host's own heap (output buffers, fd tables, directory listings) ran out: the guest asked for too much.
      if ((e as NodeJS.ErrnoException).code === "ERR_WORKER_OUT_OF_MEMORY") {
        this.logger.warn("worker ran out of heap", { error: e.message });
        this.replace(slot, ended("memory_limit", `the run exhausted the sandbox's host memory (${WORKER_MAX_OLD_GENERATION_MB} MB heap)`, this.elapsedUs(slot)));
        return;
      }
      this.logger.error("worker failed", { error: e.message, stack: e.stack });
      this.replace(slot, ended("trap", `sandbox worker failed: ${e.message}`, this.elapsedUs(slot)));
    });
    worker.on("exit", (code) => {
      if (slot.worker !== worker || this.closed) return;
      this.logger.error("worker exited unexpectedly", { code });
      this.replace(slot, ended("trap", `sandbox worker exited with code ${code}`, this.elapsedUs(slot)));
    });
  }

  private dispatch(slot: Slot, job: PoolJob, resolve: (r: RunResult) => void): void {
    const runId = this.nextRunId++;
    const timer = setTimeout(
      () => this.replace(slot, ended("timeout", `wall-clock limit of ${job.timeoutMs} ms exceeded`, this.elapsedUs(slot))),
      job.timeoutMs,
    );
    const onAbort = (): void => this.replace(slot, ended("cancelled", "cancelled by the client", this.elapsedUs(slot)));
    job.signal?.addEventListener("abort", onAbort, { once: true });
    slot.job = {
      runId,
      job,
      startedMs: performance.now(),
      resolve,
      cleanup: () => {
        clearTimeout(timer);
        job.signal?.removeEventListener("abort", onAbort);
      },
    };
    const hasModule = slot.modules.has(job.moduleKey);
    slot.modules.add(job.moduleKey);
    const message: RunMessage = {
      type: "run",
      runId,
      moduleKey: job.moduleKey,
      ...(hasModule ? {} : { module: job.module }),
      argv: job.argv,
      env: job.env,
      stdin: exactCopy(job.stdin),
      mounts: job.mounts,
      memoryLimitBytes: job.memoryLimitBytes,
      maxOutputBytes: job.maxOutputBytes,
      stream: job.listener !== undefined,
    };
    slot.worker.postMessage(message);
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    const active = slot.job;
    if (m.type === "ready" || !active || m.runId !== active.runId) return;
    const listener = active.job.listener;
    if (m.type === "output") {
      if (m.fd === 1) listener?.onStdout?.(m.data);
      else listener?.onStderr?.(m.data);
    } else if (m.type === "denial") {
      listener?.onDenial?.(m.denial);
    } else {
      const denials: Denial[] = [...m.denials];
      if (m.deniedBeyondCap > 0) {
        denials.push({ operation: "*", path: "", reason: `${m.deniedBeyondCap} more denials were not recorded` });
      }
      const r = m.result;
      const result: RunResult = {
        outcome: r.outcome,
        // proc_exit takes a u32; the contract's exit_code is an int32, so exit(-1) reads back as -1.
        exitCode: r.outcome === "exited" ? r.exitCode | 0 : 0,
        stdout: m.stdout,
        stderr: m.stderr,
        message: r.outcome === "exited" ? "" : r.message,
        denials,
        durationUs: m.durationUs,
      };
      if (r.outcome === "exited" || r.outcome === "output_limit") {
        this.finish(slot, result);
        this.drain(slot);
      } else {
        // A trap may leave the engine's stack or the host mid-operation: start clean.
        this.replace(slot, result);
      }
    }
  }

  /** Resolves the slot's job (if any) and forgets it. */
  private finish(slot: Slot, result: RunResult): void {
    const active = slot.job;
    if (!active) return;
    slot.job = undefined;
    active.cleanup();
    active.resolve(result);
  }

  /** Ends the slot's job with `result` and swaps in a fresh worker. */
  private replace(slot: Slot, result: RunResult): void {
    if (this.closed) return;
    this.finish(slot, result);
    const old = slot.worker;
    const oldRegistry = slot.fdRegistry;
    this.attachWorker(slot);
    // Fds the old guest held are closed only once its thread is gone, so none is closed under it.
    old.terminate().then(
      () => releaseHostFds(oldRegistry),
      (e: unknown) => this.logger.error("terminating a worker failed", { error: String(e) }),
    );
    slot.ready.then(
      () => this.drain(slot),
      (e: unknown) => this.logger.error("replacement worker failed to start", { error: String(e) }),
    );
  }

  /** Gives the next queued job to a slot that just became free. */
  private drain(slot: Slot): void {
    if (slot.job || this.closed) return;
    const next = this.queue.shift();
    if (!next) return;
    next.job.signal?.removeEventListener("abort", next.onAbort);
    this.dispatch(slot, next.job, next.resolve);
  }

  private elapsedUs(slot: Slot): number {
    return slot.job ? elapsedUs(slot.job.startedMs) : 0;
  }
}

/**
 * Structured clone copies a typed array's whole underlying ArrayBuffer, and a
 * request's stdin is a view into grpc-js's receive buffer: posting the view
 * cost more than the guest's whole run. Copy just the viewed bytes.
 */
function exactCopy(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

function ended(outcome: RunResult["outcome"], message: string, durationUs: number): RunResult {
  return { outcome, exitCode: 0, stdout: EMPTY, stderr: EMPTY, message, denials: [], durationUs };
}
