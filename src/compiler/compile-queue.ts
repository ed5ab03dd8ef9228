/**
 * A bounded queue for rustc runs: at most `concurrency` at once (rustc is CPU-bound, so more
 * than the cores only adds latency), at most `maxQueued` waiting; beyond that callers are
 * refused at once with COMPILE_QUEUE_FULL rather than piling up behind a flood.
 */
import { SandboxError } from "../errors/sandbox-error.js";

interface Waiter {
  start: () => void;
}

/** Runs tasks with bounded concurrency and a bounded backlog. */
export class CompileQueue {
  private active = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly maxQueued: number,
  ) {}

  /** Number of running and waiting tasks. */
  get load(): { active: number; queued: number } {
    return { active: this.active, queued: this.waiting.length };
  }

  /** Runs `task` when a slot is free. Throws COMPILE_QUEUE_FULL if the backlog is full, CANCELLED if `signal` fires while waiting. */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new SandboxError("CANCELLED", "compile cancelled");
    if (this.active >= this.concurrency) await this.wait(signal);
    else this.active++;
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private wait(signal: AbortSignal | undefined): Promise<void> {
    if (this.waiting.length >= this.maxQueued) {
      throw new SandboxError("COMPILE_QUEUE_FULL", `${this.active} compiles running and ${this.waiting.length} queued; retry later`, {
        metadata: { active: String(this.active), queued: String(this.waiting.length) },
      });
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new SandboxError("CANCELLED", "compile cancelled while queued"));
      };
      const waiter: Waiter = {
        // the slot is handed over by release(), so `active` is already counted
        start: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.waiting.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next.start();
    else this.active--;
  }
}
