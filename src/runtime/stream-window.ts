/**
 * Flow control between a worker that streams a guest's output and the
 * consumer on the main thread. The worker counts the bytes it has posted and
 * waits while too many are still untaken; the main thread subtracts bytes as
 * the consumer takes them. One window per streaming run, so one slow reader
 * can only ever stall its own guest.
 */

/** Int32 index of the count of posted bytes the consumer has not taken yet. */
const UNTAKEN = 0;

/** How long one wait lasts before the worker looks again (termination also wakes it). */
const WAIT_SLICE_MS = 100;

/** A fresh window for one run, shareable between threads. */
export function createStreamWindow(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
}

/** Worker side: blocks until fewer than `limitBytes` posted bytes are untaken, then counts `bytes` more. */
export function waitAndCharge(window: Int32Array, bytes: number, limitBytes: number): void {
  for (;;) {
    const untaken = Atomics.load(window, UNTAKEN);
    if (untaken < limitBytes) break;
    Atomics.wait(window, UNTAKEN, untaken, WAIT_SLICE_MS);
  }
  Atomics.add(window, UNTAKEN, bytes);
}

/** Main side: the consumer took `bytes`; wakes the worker if it waits. */
export function credit(window: Int32Array, bytes: number): void {
  Atomics.sub(window, UNTAKEN, bytes);
  Atomics.notify(window, UNTAKEN);
}

/** Bytes posted and not yet taken (for tests and diagnostics). */
export function untakenBytes(window: Int32Array): number {
  return Atomics.load(window, UNTAKEN);
}
