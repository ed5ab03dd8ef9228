import { performance } from "node:perf_hooks";

/** Microseconds since `startMs` (a performance.now() reading), as the contract's *_duration_us fields carry them. */
export function elapsedUs(startMs: number): number {
  return Math.round((performance.now() - startMs) * 1000);
}
