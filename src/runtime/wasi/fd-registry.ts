import { closeSync } from "node:fs";

/**
 * A shared (SharedArrayBuffer-backed) table of the host file descriptors a
 * worker currently holds. Terminating a worker mid-run does not close the fds
 * it opened (they belong to the process), so the pool's main thread reads this
 * table after a terminate and closes what is left.
 *
 * Slot value 0 means empty; otherwise it is hostFd + 1 (fd 0 is a valid host fd).
 */

/** Number of Int32 slots the pool allocates per worker; must exceed MAX_OPEN_FDS. */
export const FD_REGISTRY_SLOTS = 1024;

/** Records `hostFd` in the first free slot; returns the slot or -1 if the table is full. */
export function registerHostFd(registry: Int32Array | undefined, hostFd: number): number {
  if (registry === undefined) return -1;
  for (let i = 0; i < registry.length; i++) {
    if (Atomics.compareExchange(registry, i, 0, hostFd + 1) === 0) return i;
  }
  return -1;
}

/** Clears a slot before its fd is closed, so a terminate in between leaks at worst one fd rather than closing a reused number. */
export function unregisterHostFd(registry: Int32Array | undefined, slot: number): void {
  if (registry !== undefined && slot >= 0) Atomics.store(registry, slot, 0);
}

/** Called by the pool's main thread after it terminated a worker mid-run (timeout/cancel): closes fds left in the registry. */
export function releaseHostFds(registry: Int32Array): void {
  for (let i = 0; i < registry.length; i++) {
    const v = Atomics.exchange(registry, i, 0);
    if (v !== 0) {
      try {
        closeSync(v - 1);
      } catch {
        // Already closed by the worker between its last store and the terminate: nothing to release.
      }
    }
  }
}
