/**
 * Command line of `npm run soak`: how long, how many calls in flight, which
 * seed, and the short `--quick` mode a test runs in CI.
 */
import { parseArgs } from "node:util";

/** Load phase of a full soak unless --duration says otherwise. */
export const DEFAULT_DURATION_MS = 10 * 60_000;
/** Load phase of --quick (the whole run, compile and settle included, takes about 30 s). */
export const QUICK_DURATION_MS = 15_000;
/** Calls in flight at once in a full soak. */
export const DEFAULT_CONCURRENCY = 8;
/** Calls in flight at once in --quick (CI shares 2 cores with other work). */
export const QUICK_CONCURRENCY = 4;

/** Parsed command line. */
export interface SoakOptions {
  readonly quick: boolean;
  /** Length of the load phase, in ms (warm-up, precompile and settle come on top). */
  readonly durationMs: number;
  readonly concurrency: number;
  /** Seeds the mix of calls and their inputs; the same seed replays the same choices. */
  readonly seed: number;
  /** Where results.json goes. */
  readonly out: string;
}

/** The usage text. */
export const USAGE = `usage: npm run soak -- [--quick] [--duration 10m] [--concurrency N] [--seed S] [--out FILE]

  --quick            a ~30 s soak (CI runs it): every kind of call at least once, then a short random mix
  --duration D       length of the load phase: 90s, 10m, 1h or plain seconds (default 10m)
  --concurrency N    calls in flight at once (default ${DEFAULT_CONCURRENCY}; ${QUICK_CONCURRENCY} with --quick)
  --seed S           seed of the random mix, 0 to 4294967295 (default: random, printed so a run can be replayed)
  --out FILE         where to write results.json (default soak/results.json)
`;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `90s`, `10m`, `1h`, `500ms` or plain seconds into ms; an Error for anything else. */
export function parseDuration(text: string): number | Error {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) return new Error(`--duration takes e.g. 90s, 10m or 1h, got ${JSON.stringify(text)}`);
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? "s"]!;
  if (!(ms > 0)) return new Error(`--duration must be positive, got ${JSON.stringify(text)}`);
  return ms;
}

/** Largest --seed: the generator's state is 32 bits. */
const MAX_SEED = 2 ** 32 - 1;

function integerIn(min: number, max: number, flag: string, text: string): number | Error {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    return new Error(
      `${flag} takes an integer of at least ${min}${max < Number.MAX_SAFE_INTEGER ? ` and at most ${max}` : ""}, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

/** Parses argv; returns an Error with a readable message on bad flags (message "help" for --help). */
export function parseSoakArgs(argv: readonly string[], defaultOut: string, randomSeed: () => number): SoakOptions | Error {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        quick: { type: "boolean", default: false },
        duration: { type: "string" },
        concurrency: { type: "string" },
        seed: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e: unknown) {
    return new Error(e instanceof Error ? e.message : String(e));
  }
  if (values.help) return new Error("help");
  const durationMs =
    values.duration === undefined ? (values.quick ? QUICK_DURATION_MS : DEFAULT_DURATION_MS) : parseDuration(values.duration);
  if (durationMs instanceof Error) return durationMs;
  const concurrency =
    values.concurrency === undefined
      ? values.quick
        ? QUICK_CONCURRENCY
        : DEFAULT_CONCURRENCY
      : integerIn(1, Number.MAX_SAFE_INTEGER, "--concurrency", values.concurrency);
  if (concurrency instanceof Error) return concurrency;
  const seed = values.seed === undefined ? randomSeed() : integerIn(0, MAX_SEED, "--seed", values.seed);
  if (seed instanceof Error) return seed;
  return { quick: values.quick, durationMs, concurrency, seed, out: values.out ?? defaultOut };
}
