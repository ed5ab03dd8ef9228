/**
 * Singleflight: concurrent calls with the same key share one execution. The shared work gets its
 * own AbortSignal that fires only when every caller waiting on it has given up, so one client
 * cancelling does not fail the others' identical compile.
 */
import { SandboxError } from "../errors/sandbox-error.js";

interface Flight<T> {
  promise: Promise<T>;
  controller: AbortController;
  waiters: number;
}

/** Deduplicates concurrent work by key. */
export class Singleflight<T> {
  private readonly flights = new Map<string, Flight<T>>();

  /** Number of distinct keys in flight. */
  get size(): number {
    return this.flights.size;
  }

  /**
   * Runs `work` for `key` unless a run for it is already in flight, in which case waits for that one.
   * Rejects with CANCELLED when `signal` fires (the work itself continues while others still wait).
   */
  do(key: string, work: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(new SandboxError("CANCELLED", "cancelled"));
    let flight = this.flights.get(key);
    if (!flight) {
      const controller = new AbortController();
      const created: Flight<T> = { controller, waiters: 0, promise: Promise.resolve(undefined as T) };
      created.promise = (async () => {
        try {
          return await work(controller.signal);
        } finally {
          this.flights.delete(key);
        }
      })();
      // a flight everyone abandoned may still reject; nobody is left to observe it
      created.promise.catch(() => {});
      this.flights.set(key, created);
      flight = created;
    }
    return this.wait(flight, signal);
  }

  private wait(flight: Flight<T>, signal: AbortSignal | undefined): Promise<T> {
    flight.waiters++;
    if (!signal) return flight.promise;
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        if (--flight.waiters === 0) flight.controller.abort();
        reject(new SandboxError("CANCELLED", "cancelled"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      flight.promise.then(
        (v) => {
          signal.removeEventListener("abort", onAbort);
          resolve(v);
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  }
}
