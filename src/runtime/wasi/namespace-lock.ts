import { threadId } from "node:worker_threads";

/**
 * A readers–writer lock over the host directory tree, in shared memory, so that every guest of the process
 * takes it whichever worker thread runs it.
 *
 * Why it exists: each path operation walks a guest path one directory at a time, checking that every
 * directory it opens lies under the mount, and then acts inside the last one. Another guest holding two
 * mounts could move that directory from one into the other between the check and the act (or away and
 * back, which no check before or after can see), and the act would land in a mount the first guest was
 * never granted. So path operations and mutations through open files run as readers, and renames (the only
 * call that moves a directory or file) as the writer: a guest's rename happens entirely before or entirely
 * after another guest's check-and-act.
 *
 * Layout (Int32): [0] the writer's holder id or 0; [1] a counter bumped whenever a reader slot changes (what
 * waiters on the slots sleep on); [2...] one slot per reader: 0 free, +holder id while it reads, -holder id
 * while it waits for a writer. A holder id is the
 * thread's id + 1, so a lock left held by a thread that was terminated mid-operation can be released for it
 * (releaseNamespaceLockHeldBy) once the thread is gone: a held lock can then never outlive its thread.
 *
 * A thread holds at most one reader slot (it runs one guest, one call at a time), and every hold lasts one host
 * call; waits are bounded, so a stuck holder makes others fail with an error instead of hanging for ever.
 */

const WRITER = 0;
const SLOT_CHANGES = 1;
const FIRST_READER = 2;
/** Reader slots: more than the worker threads a daemon runs at once, dying ones included. */
export const NAMESPACE_LOCK_READER_SLOTS = 256;

/** A fresh, unheld lock. */
export function createNamespaceLock(): Int32Array {
  return new Int32Array(new SharedArrayBuffer((FIRST_READER + NAMESPACE_LOCK_READER_SLOTS) * Int32Array.BYTES_PER_ELEMENT));
}

let processLock: Int32Array | undefined;

/** The lock every worker pool of this process hands its workers (created on first use, on the main thread). */
export function processNamespaceLock(): Int32Array {
  processLock ??= createNamespaceLock();
  return processLock;
}

/** The holder id a thread uses (0 means "nobody", and the main thread's id is 0). */
export function namespaceLockHolder(thread: number = threadId): number {
  return thread + 1;
}

function msLeft(deadline: number): number {
  return deadline - performance.now();
}

/** Stores `value` in a reader slot and wakes whoever watches the slots (a writer draining or deferring). */
function setSlot(lock: Int32Array, slot: number, value: number): void {
  Atomics.store(lock, slot, value);
  Atomics.add(lock, SLOT_CHANGES, 1);
  Atomics.notify(lock, SLOT_CHANGES);
}

/** Takes a reader slot; returns it, or -1 if `timeoutMs` passed first. */
export function acquireShared(lock: Int32Array, holder: number, timeoutMs: number): number {
  const deadline = performance.now() + timeoutMs;
  let slot = -1;
  while (slot < 0) {
    const changes = Atomics.load(lock, SLOT_CHANGES);
    for (let i = FIRST_READER; i < lock.length && slot < 0; i++) {
      if (Atomics.compareExchange(lock, i, 0, holder) === 0) slot = i;
    }
    if (slot >= 0) break;
    const left = msLeft(deadline);
    if (left <= 0) return -1;
    Atomics.wait(lock, SLOT_CHANGES, changes, left);
  }
  for (;;) {
    // The slot is published before the writer word is read, and a writer publishes itself before it scans the
    // slots (Atomics are sequentially consistent): at least one of the two sees the other.
    if (Atomics.load(lock, WRITER) === 0) return slot;
    // A writer holds the lock or is waiting for readers to leave: wait as a waiting reader, not an active one.
    setSlot(lock, slot, -holder);
    for (;;) {
      const writer = Atomics.load(lock, WRITER);
      if (writer === 0) break;
      const left = msLeft(deadline);
      if (left <= 0) {
        setSlot(lock, slot, 0);
        return -1;
      }
      Atomics.wait(lock, WRITER, writer, left);
    }
    setSlot(lock, slot, holder);
  }
}

/** Gives a reader slot back. */
export function releaseShared(lock: Int32Array, slot: number): void {
  setSlot(lock, slot, 0);
}

/**
 * Takes the lock alone (no active reader, no other writer); returns false if `timeoutMs` passed first.
 * Readers left waiting by the previous writer go first, so a guest renaming in a tight loop cannot starve others.
 */
export function acquireExclusive(lock: Int32Array, holder: number, timeoutMs: number): boolean {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const changes = Atomics.load(lock, SLOT_CHANGES);
    let waitingReaders = false;
    for (let i = FIRST_READER; i < lock.length && !waitingReaders; i++) waitingReaders = Atomics.load(lock, i) < 0;
    const writer = waitingReaders ? -1 : Atomics.compareExchange(lock, WRITER, 0, holder);
    if (writer === 0) break;
    const left = msLeft(deadline);
    if (left <= 0) return false;
    if (waitingReaders) Atomics.wait(lock, SLOT_CHANGES, changes, left);
    else Atomics.wait(lock, WRITER, writer, left);
  }
  // New readers now wait for us; let those already in finish.
  for (;;) {
    const changes = Atomics.load(lock, SLOT_CHANGES);
    let busy = false;
    for (let i = FIRST_READER; i < lock.length && !busy; i++) busy = Atomics.load(lock, i) > 0;
    if (!busy) return true;
    const left = msLeft(deadline);
    if (left <= 0) {
      releaseExclusive(lock, holder);
      return false;
    }
    Atomics.wait(lock, SLOT_CHANGES, changes, left);
  }
}

/** Gives the writer's hold back. */
export function releaseExclusive(lock: Int32Array, holder: number): void {
  if (Atomics.compareExchange(lock, WRITER, holder, 0) === holder) Atomics.notify(lock, WRITER);
}

/** Releases whatever `holder` still holds or waits for; only for a thread known to be gone (the pool calls it on a worker's exit). */
export function releaseNamespaceLockHeldBy(lock: Int32Array, holder: number): void {
  releaseExclusive(lock, holder);
  for (let i = FIRST_READER; i < lock.length; i++) {
    const v = Atomics.load(lock, i);
    if ((v === holder || v === -holder) && Atomics.compareExchange(lock, i, v, 0) === v) {
      Atomics.add(lock, SLOT_CHANGES, 1);
      Atomics.notify(lock, SLOT_CHANGES);
    }
  }
}
