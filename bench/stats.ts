/**
 * Percentile summaries of timing samples. Nearest-rank percentiles: with tiny N
 * (the --quick mode) they stay actual observations instead of interpolations.
 */

/** A summary of N samples, all in the samples' unit. */
export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly mean: number;
  readonly min: number;
  readonly max: number;
}

/** The nearest-rank `p`-th percentile (0 < p ≤ 100) of ascending `sorted`. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Summarises samples; an empty list gives NaN figures and n = 0. */
export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/**
 * Runs `fn` `n` times one after another and returns each call's wall time in ms.
 * Stops early once `budgetMs` has elapsed (after at least one call), so a loaded
 * machine shortens a measurement (its N says so) instead of stretching the run.
 */
export async function timeSerial(n: number, fn: (i: number) => Promise<unknown> | unknown, budgetMs = Infinity): Promise<number[]> {
  const samples: number[] = [];
  const deadline = performance.now() + budgetMs;
  for (let i = 0; i < n && (i === 0 || performance.now() < deadline); i++) {
    const started = performance.now();
    await fn(i);
    samples.push(performance.now() - started);
    // Outside the timed region: let the event loop run. node:wasi frees each instance's
    // uvwasi state from the loop, and segfaults after ~500 synchronous runs without it.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return samples;
}

/**
 * Runs `total` calls of `fn` with `concurrency` in flight and returns the
 * throughput in calls per second plus each call's latency in ms.
 */
export async function timeConcurrent(
  total: number,
  concurrency: number,
  fn: (i: number) => Promise<unknown>,
): Promise<{ perSecond: number; latenciesMs: number[] }> {
  const latenciesMs: number[] = [];
  let next = 0;
  const started = performance.now();
  const lane = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      const t = performance.now();
      await fn(i);
      latenciesMs.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, lane));
  const elapsedS = (performance.now() - started) / 1000;
  return { perSecond: total / elapsedS, latenciesMs };
}
