/**
 * How the property-based fuzz tests run: seeded (the same seed replays the same
 * inputs) and bounded in time, so each property costs CI a few seconds.
 * FUZZ_SEED, FUZZ_RUNS and FUZZ_TIME_MS override them for a longer hunt.
 */
import type { Parameters } from "fast-check";

/** Seed of every property unless FUZZ_SEED says otherwise. */
const DEFAULT_FUZZ_SEED = 20_261_129;
/** Inputs tried per property at most. */
const DEFAULT_FUZZ_RUNS = 400;
/** Wall-clock budget of one property, in ms: whatever has run by then counts, the rest is skipped. */
const DEFAULT_FUZZ_TIME_MS = 6_000;

function fromEnv(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

/** fast-check parameters for one property; `runs` and `timeMs` are this property's own defaults. */
export function fuzzParameters<T>(overrides: { runs?: number; timeMs?: number } = {}): Parameters<T> {
  return {
    seed: fromEnv("FUZZ_SEED", DEFAULT_FUZZ_SEED),
    numRuns: fromEnv("FUZZ_RUNS", overrides.runs ?? DEFAULT_FUZZ_RUNS),
    interruptAfterTimeLimit: fromEnv("FUZZ_TIME_MS", overrides.timeMs ?? DEFAULT_FUZZ_TIME_MS),
  };
}

/** Longest a single test of a time-bounded property may take: the budget, plus the run it was in, plus set-up. */
export function fuzzTestTimeoutMs(timeMs = DEFAULT_FUZZ_TIME_MS): number {
  return fromEnv("FUZZ_TIME_MS", timeMs) * 4 + 30_000;
}
