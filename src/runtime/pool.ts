import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { SandboxError } from "../errors/sandbox-error.js";
import { elapsedUs } from "../elapsed.js";
import type { Logger } from "../logger.js";
import type { BufferBudget } from "./buffer-budget.js";
import type { Denial, RunListener, RunResult } from "./execution.js";
import { openOutboundSession, type OutboundSettings } from "./net/outbound-session.js";
import { createStreamWindow, credit } from "./stream-window.js";
import { namespaceLockHolder, processNamespaceLock, releaseNamespaceLockHeldBy } from "./wasi/namespace-lock.js";
import type { WorkerInit } from "./worker.js";
import {
  CONTROL_HEADER_BYTES,
  CONTROL_STATE,
  CONTROL_STDIN_BYTES,
  CONTROL_VIA_PORT,
  REQUEST_AREA_BYTES,
  REQUEST_AREA_OFFSET,
  REQUEST_READY,
  type FromWorker,
  type GuestParameters,
  type RunHeader,
  type RunMessage,
} from "./worker-protocol.js";

/**
 * V8 heap ceiling of one worker. Guest linear memory is not on this heap (the
 * module's own maximum caps it); this bounds the host side (output buffers,
 * fd tables) so a runaway can only kill its own worker.
 */
const WORKER_MAX_OLD_GENERATION_MB = 512;

/** Pause before starting a worker again after one failed to start, so a persistent failure does not spin. */
const WORKER_RESPAWN_DELAY_MS = 1_000;

/** One job for the pool: a compiled module plus everything its run needs. */
export interface PoolJob extends GuestParameters {
  readonly module: WebAssembly.Module;
  /** The guest's wall-clock budget, counted from the moment a ready worker takes the job. */
  readonly timeoutMs: number;
  readonly listener?: RunListener;
  readonly signal?: AbortSignal;
  /** Outbound HTTP the run may make; absent = none. */
  readonly network?: OutboundSettings;
}

/** How the pool is sized and bounded. */
export interface PoolOptions {
  readonly workers: number;
  /** Executions allowed to wait for a worker; beyond it EXECUTION_QUEUE_FULL. */
  readonly maxQueued: number;
  /** Shared account of bytes held for calls (queued stdin, untaken streamed output). */
  readonly budget: BufferBudget;
  readonly logger: Logger;
}

interface Slot {
  worker: Worker;
  /** The worker's run channel: its control cells, request area and request port. */
  control: Int32Array;
  area: Buffer;
  requests: MessagePort | undefined;
  /** True once the worker has loaded and said so; jobs go only to ready workers. */
  ready: boolean;
  /** Module keys this worker already holds. */
  readonly modules: Set<string>;
  job?: ActiveJob;
}

interface ActiveJob {
  readonly runId: number;
  readonly job: PoolJob;
  readonly startedMs: number;
  readonly resolve: (result: RunResult) => void;
  /** The run's stream window (StreamOutput only). */
  readonly window: Int32Array | undefined;
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
 * synchronous guest) and a fresh one takes its slot. The host fds a guest
 * opened belong to its worker thread alone: Node closes every fd a worker
 * opened with `fs.openSync` when that worker's environment is torn down, so
 * nothing else may ever close them by number (the number may be reused).
 * Jobs only go to workers that have finished starting, so a booting worker is
 * never terminated mid-load and a guest's clock never runs while it boots.
 * A job reaches its idle worker through shared memory and a futex wake-up
 * (see RunChannel), not a message: that wake-up is most of a short run's cost.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: QueuedJob[] = [];
  private nextRunId = 1;
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** Starts the workers and waits until each has loaded. */
  async start(): Promise<void> {
    const booted: Promise<void>[] = [];
    for (let i = 0; i < this.options.workers; i++) {
      const slot: Slot = {
        worker: undefined as unknown as Worker,
        control: new Int32Array(0),
        area: Buffer.alloc(0),
        requests: undefined,
        ready: false,
        modules: new Set(),
      };
      this.slots.push(slot);
      booted.push(this.attachWorker(slot));
    }
    await Promise.all(booted);
  }

  /** Jobs waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Workers running a guest now. */
  get busy(): number {
    return this.slots.reduce((n, s) => n + (s.job ? 1 : 0), 0);
  }

  /** Runs a job on the next ready worker. Rejects only when admission fails or the pool is closed. */
  run(job: PoolJob): Promise<RunResult> {
    if (this.closed) return Promise.reject(new SandboxError("SHUTTING_DOWN", "the daemon is shutting down"));
    if (job.signal?.aborted) return Promise.resolve(ended("cancelled", "cancelled before it started", 0));
    const free = this.slots.find((s) => s.ready && !s.job);
    if (!free && this.queue.length >= this.options.maxQueued) {
      return Promise.reject(new SandboxError("EXECUTION_QUEUE_FULL", `${this.queue.length} executions are already waiting for a worker`));
    }
    const stdinBytes = job.stdin.byteLength;
    const { budget } = this.options;
    if (!budget.tryAcquire(stdinBytes)) {
      return Promise.reject(
        new SandboxError(
          "EXECUTION_QUEUE_FULL",
          `the daemon already holds ${budget.used} of its ${budget.limitBytes} bytes for other calls' input and output`,
        ),
      );
    }
    return new Promise<RunResult>((resolveRun) => {
      const resolve = (result: RunResult): void => {
        budget.release(stdinBytes);
        resolveRun(result);
      };
      if (free) {
        this.dispatch(free, job, resolve);
        return;
      }
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
        slot.requests?.close();
        await slot.worker.terminate();
      }),
    );
  }

  /**
   * Starts a fresh worker in `slot` and routes its events there; resolves once it is ready. Every
   * handler first checks that the slot still holds this worker: a replaced worker's late events
   * must never touch the job that runs in its slot now.
   */
  private attachWorker(slot: Slot): Promise<void> {
    // A fresh channel per worker: a terminated worker's successor never shares its request area.
    const shared = new SharedArrayBuffer(REQUEST_AREA_OFFSET + REQUEST_AREA_BYTES);
    const { port1, port2 } = new MessageChannel();
    const namespaceLock = processNamespaceLock();
    const init: WorkerInit = { shared, port: port2, namespaceLock };
    const worker = new Worker(new URL("./worker.js", import.meta.url), {
      workerData: init,
      transferList: [port2],
      resourceLimits: { maxOldGenerationSizeMb: WORKER_MAX_OLD_GENERATION_MB },
      // The guest must never reach the daemon's own stdio or environment.
      stdout: true,
      stderr: true,
      stdin: false,
      env: {},
    });
    // A worker terminated mid-call may die holding the namespace lock: release it for the thread once it is gone.
    const holder = namespaceLockHolder(worker.threadId);
    worker.once("exit", () => releaseNamespaceLockHeldBy(namespaceLock, holder));
    slot.worker = worker;
    slot.control = new Int32Array(shared, 0, REQUEST_AREA_OFFSET / Int32Array.BYTES_PER_ELEMENT);
    slot.area = Buffer.from(shared, REQUEST_AREA_OFFSET, REQUEST_AREA_BYTES);
    slot.requests?.close();
    slot.requests = port1;
    slot.ready = false;
    slot.modules.clear();
    const current = (): boolean => slot.worker === worker && !this.closed;
    // Nothing should appear on the worker's own stdio; if the host ever logs,
    // it goes to our log instead of blocking the worker on a full pipe.
    worker.stdout.on("data", (d: Buffer) => this.options.logger.debug("worker stdout", { data: d.toString() }));
    worker.stderr.on("data", (d: Buffer) => this.options.logger.warn("worker stderr", { data: d.toString() }));
    const booted = new Promise<void>((resolve, reject) => {
      worker.on("message", (m: FromWorker) => {
        if (!current()) return;
        if (m.type === "ready") {
          slot.ready = true;
          resolve();
          this.drain(slot);
        } else {
          this.onMessage(slot, m);
        }
      });
      worker.on("error", (e: Error) => {
        if (!current()) return;
        if (!slot.ready) {
          reject(e);
          this.respawnLater(slot, e);
          return;
        }
        // The host's own heap (output buffers, fd tables, directory listings) ran out: the guest asked for too much.
        if ((e as NodeJS.ErrnoException).code === "ERR_WORKER_OUT_OF_MEMORY") {
          this.options.logger.warn("worker ran out of heap", { error: e.message });
          this.replace(
            slot,
            ended(
              "memory_limit",
              `the run exhausted the sandbox's host memory (${WORKER_MAX_OLD_GENERATION_MB} MB heap)`,
              this.elapsedUs(slot),
            ),
          );
          return;
        }
        this.options.logger.error("worker failed", { error: e.message, stack: e.stack });
        this.replace(slot, ended("trap", `sandbox worker failed: ${e.message}`, this.elapsedUs(slot)));
      });
      worker.on("exit", (code) => {
        if (!current()) return;
        if (!slot.ready) {
          const e = new Error(`sandbox worker exited with code ${code} while starting`);
          reject(e);
          this.respawnLater(slot, e);
          return;
        }
        this.options.logger.error("worker exited unexpectedly", { code });
        this.replace(slot, ended("trap", `sandbox worker exited with code ${code}`, this.elapsedUs(slot)));
      });
    });
    return booted;
  }

  /** A worker failed to start: say so and try again shortly, so the pool does not shrink for good. */
  private respawnLater(slot: Slot, e: Error): void {
    this.options.logger.error("a sandbox worker failed to start", { error: e.message });
    const failed = slot.worker;
    setTimeout(() => {
      if (this.closed || slot.worker !== failed) return;
      this.attachWorker(slot).catch(() => undefined);
    }, WORKER_RESPAWN_DELAY_MS).unref();
  }

  private dispatch(slot: Slot, job: PoolJob, resolve: (r: RunResult) => void): void {
    const runId = this.nextRunId++;
    const timer = setTimeout(
      () => this.replace(slot, ended("timeout", `wall-clock limit of ${job.timeoutMs} ms exceeded`, this.elapsedUs(slot))),
      job.timeoutMs,
    );
    const onAbort = (): void => this.replace(slot, ended("cancelled", "cancelled by the client", this.elapsedUs(slot)));
    job.signal?.addEventListener("abort", onAbort, { once: true });
    const window = job.listener ? createStreamWindow() : undefined;
    const http = job.network ? openOutboundSession(job.network, this.options.logger) : undefined;
    slot.job = {
      runId,
      job,
      startedMs: performance.now(),
      resolve,
      window,
      cleanup: () => {
        clearTimeout(timer);
        job.signal?.removeEventListener("abort", onAbort);
        http?.close();
      },
    };
    const hasModule = slot.modules.has(job.moduleKey);
    slot.modules.add(job.moduleKey);
    const header: RunHeader = {
      runId,
      moduleKey: job.moduleKey,
      instantiateAhead: job.instantiateAhead,
      argv: job.argv,
      env: [...job.env],
      mounts: job.mounts,
      memoryLimitBytes: job.memoryLimitBytes,
      memory: job.memory,
      maxOutputBytes: job.maxOutputBytes,
      maxWriteBytes: job.maxWriteBytes,
      maxCreatedEntries: job.maxCreatedEntries,
      fuelLimit: job.fuelLimit,
    };
    const { control, area } = slot;
    const json = JSON.stringify(header);
    // A UTF-16 code unit is at most 3 UTF-8 bytes: a cheap bound that saves measuring the header.
    const fits = hasModule && window === undefined && http === undefined && json.length * 3 + job.stdin.byteLength <= REQUEST_AREA_BYTES;
    if (fits) {
      const headerBytes = area.write(json, 0);
      area.set(job.stdin, headerBytes);
      Atomics.store(control, CONTROL_HEADER_BYTES, headerBytes);
      Atomics.store(control, CONTROL_STDIN_BYTES, job.stdin.byteLength);
      Atomics.store(control, CONTROL_VIA_PORT, 0);
    } else {
      const message: RunMessage = {
        type: "run",
        ...header,
        env: job.env,
        ...(hasModule ? {} : { module: job.module }),
        stdin: exactCopy(job.stdin),
        ...(window ? { streamWindow: window } : {}),
        ...(http ? { http: { channel: http.worker, timeoutMs: job.timeoutMs } } : {}),
      };
      slot.requests?.postMessage(message, http ? [http.worker.port] : []);
      Atomics.store(control, CONTROL_VIA_PORT, 1);
    }
    Atomics.store(control, CONTROL_STATE, REQUEST_READY);
    Atomics.notify(control, CONTROL_STATE);
  }

  private onMessage(slot: Slot, m: Exclude<FromWorker, { type: "ready" }>): void {
    const active = slot.job;
    if (!active || m.runId !== active.runId) return;
    const listener = active.job.listener;
    if (m.type === "output") {
      this.deliver(active, m.fd, m.data);
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
        fuelConsumed: m.fuelConsumed,
        denialCount: m.denials.length + m.deniedBeyondCap,
      };
      // Fuel runs out only at a check in guest code, never inside a host call: nothing is left half done.
      if (r.outcome === "exited" || r.outcome === "output_limit" || r.outcome === "fuel_exhausted") {
        this.finish(slot, result);
        this.drain(slot);
      } else {
        // A trap may leave the engine's stack or the host mid-operation: start clean.
        this.replace(slot, result);
      }
    }
  }

  /**
   * Hands streamed output to the run's listener. The bytes count in the shared budget and
   * against the run's window until the listener says its consumer took them.
   */
  private deliver(active: ActiveJob, fd: 1 | 2, data: Uint8Array): void {
    const listener = active.job.listener;
    const bytes = data.byteLength;
    const { budget } = this.options;
    budget.acquire(bytes);
    let taken = false;
    const take = (): void => {
      if (taken) return;
      taken = true;
      budget.release(bytes);
      if (active.window) credit(active.window, bytes);
    };
    const pending = fd === 1 ? listener?.onStdout?.(data) : listener?.onStderr?.(data);
    if (pending instanceof Promise) pending.then(take, take);
    else take();
  }

  /** Resolves the slot's job (if any) and forgets it. */
  private finish(slot: Slot, result: RunResult): void {
    const active = slot.job;
    if (!active) return;
    slot.job = undefined;
    active.cleanup();
    active.resolve(result);
  }

  /** Ends the slot's job with `result` and swaps in a fresh worker; the old one takes its fds with it. */
  private replace(slot: Slot, result: RunResult): void {
    if (this.closed) return;
    this.finish(slot, result);
    const old = slot.worker;
    this.attachWorker(slot).catch(() => undefined);
    old.terminate().catch((e: unknown) => this.options.logger.error("terminating a worker failed", { error: String(e) }));
  }

  /** Gives the next queued job to a slot that just became free. */
  private drain(slot: Slot): void {
    if (!slot.ready || slot.job || this.closed) return;
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
  return { outcome, exitCode: 0, stdout: EMPTY, stderr: EMPTY, message, denials: [], durationUs, fuelConsumed: 0, denialCount: 0 };
}
