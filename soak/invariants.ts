/**
 * The checks a soak ends with. Each is named, says what it found, and fails the
 * run (non-zero exit) when it does not hold. Tolerances are named here.
 */
import { readFile } from "node:fs/promises";
import type { AppendRecord } from "./kinds.js";
import type { ProcessSample } from "./probes.js";

/** Open descriptors the daemon may hold above its baseline once settled (a worker being replaced holds a few for a moment). */
export const FD_TOLERANCE = 3;
/** Threads the daemon may run above its baseline once settled. */
export const THREAD_TOLERANCE = 2;
/** Growth of the daemon's RSS allowed over the second half of the load phase, in MiB. */
export const RSS_DRIFT_LIMIT_MIB = 64;

/** One checked invariant. */
export interface InvariantResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/** An invariant from a condition and what was seen. */
export function check(name: string, ok: boolean, detail: string): InvariantResult {
  return { name, ok, detail };
}

/** fds and threads back to the baseline, each within its tolerance. */
export function resourcesSettled(baseline: ProcessSample, end: ProcessSample): InvariantResult[] {
  return [
    check("fds back to baseline", end.fds <= baseline.fds + FD_TOLERANCE, `${baseline.fds} → ${end.fds} (tolerance +${FD_TOLERANCE})`),
    check(
      "threads back to baseline",
      end.threads <= baseline.threads + THREAD_TOLERANCE,
      `${baseline.threads} → ${end.threads} (tolerance +${THREAD_TOLERANCE})`,
    ),
  ];
}

/** Median of a few numbers (NaN for none). */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * RSS growth over the second half of the load: the median of the last tenth of the samples minus the
 * median of the tenth around the midpoint (medians, so one GC-timed sample does not decide).
 */
export function rssDriftMiB(rssSamples: readonly number[]): number {
  const n = rssSamples.length;
  if (n < 2) return 0;
  const window = Math.max(1, Math.floor(n / 10));
  const start = Math.max(0, Math.floor(n / 2) - Math.floor(window / 2));
  return median(rssSamples.slice(n - window)) - median(rssSamples.slice(start, start + window));
}

/**
 * The shared log several guests appended to at once: every line of every clean append run exactly once,
 * whole, and nothing else. Returns the problems found (empty when intact).
 */
export async function sharedLogProblems(logPath: string, appends: readonly AppendRecord[]): Promise<string[]> {
  let text = "";
  try {
    text = await readFile(logPath, "utf8");
  } catch (e: unknown) {
    if (appends.length === 0) return [];
    return [`cannot read ${logPath}: ${String(e)}`];
  }
  const expected = new Map<string, number>();
  for (const a of appends) for (let i = 0; i < a.lines; i++) expected.set(`${a.tag}:${i}`, 0);
  const problems: string[] = [];
  if (text.length > 0 && !text.endsWith("\n")) problems.push("the log does not end with a whole line");
  for (const line of text.split("\n").slice(0, -1)) {
    const seen = expected.get(line);
    if (seen === undefined) problems.push(`unexpected line ${JSON.stringify(line.slice(0, 80))}`);
    else expected.set(line, seen + 1);
  }
  for (const [line, count] of expected) if (count !== 1) problems.push(`${line} appears ${count} times`);
  return problems;
}
