/**
 * Command line of `npm run bench` and the sample sizes of the full and --quick
 * modes. Full sizes are chosen so the whole run fits in ~5 minutes on 2 cores.
 */
import { parseArgs } from "node:util";

/** What `--profile` can profile: the daemon under one workload, or ("start") just its start-up. */
export const PROFILE_SCENARIOS = ["execute", "stream", "cpu", "compile", "repair", "start"] as const;
/** One of {@link PROFILE_SCENARIOS}. */
export type ProfileScenario = (typeof PROFILE_SCENARIOS)[number];

/** How many samples each measurement takes. */
export interface Sizes {
  /** Executes thrown away before timing, so JIT and caches are warm. */
  readonly warmupRuns: number;
  /** Serial hello Executes for the latency percentiles. */
  readonly latencyRuns: number;
  /** Throughput is measured in this many rounds (a p50 over rounds)... */
  readonly throughputRounds: number;
  /** ...of this many Executes each. */
  readonly throughputRunsPerRound: number;
  /** Serial runs of each in-process floor/peer and of Health/Check. */
  readonly floorRuns: number;
  /** Wall-clock cap of one serial measurement; it reports fewer samples rather than overrun. */
  readonly serialBudgetMs: number;
  /** Runs of the jco peer (slower per run). */
  readonly jcoRuns: number;
  /** Runs of the CPU-bound script, in sandboxd and in raw V8 each. */
  readonly cpuRuns: number;
  /** Cold compiles of each source, per variant (daemon, raw rustc, rustc under bwrap). */
  readonly coldCompileRuns: number;
  /** Fixture names whose cold compile is measured. */
  readonly compileSources: readonly string[];
  /** Cache-hit Compiles. */
  readonly cacheHitRuns: number;
  /** StreamOutput calls, and MiB each writes. */
  readonly streamRuns: number;
  readonly streamMiB: number;
  /** Daemon starts timed to SERVING. */
  readonly startRuns: number;
  /** RSS is read idle, after half this many runs and after all of them (the drift is the second half's growth). */
  readonly rssRuns: number;
}

/** Sizes of a full run. */
export const FULL_SIZES: Sizes = {
  warmupRuns: 200,
  latencyRuns: 2000,
  throughputRounds: 5,
  throughputRunsPerRound: 500,
  floorRuns: 2000,
  serialBudgetMs: 15_000,
  jcoRuns: 200,
  cpuRuns: 10,
  coldCompileRuns: 3,
  compileSources: ["hello", "serde_order", "report_300"],
  cacheHitRuns: 500,
  streamRuns: 3,
  streamMiB: 100,
  startRuns: 5,
  rssRuns: 10_000,
};

/** Tiny sizes: --quick only proves the harness still works (CI). */
export const QUICK_SIZES: Sizes = {
  warmupRuns: 3,
  latencyRuns: 10,
  throughputRounds: 1,
  throughputRunsPerRound: 16,
  floorRuns: 10,
  serialBudgetMs: 5_000,
  jcoRuns: 3,
  cpuRuns: 1,
  coldCompileRuns: 1,
  compileSources: ["hello"],
  cacheHitRuns: 5,
  streamRuns: 1,
  streamMiB: 2,
  startRuns: 1,
  rssRuns: 100,
};

/** Parsed command line. */
export interface BenchOptions {
  readonly quick: boolean;
  readonly sizes: Sizes;
  /** Where results.json goes. */
  readonly out: string;
  /** Profile the daemon under this workload instead of running the benchmark. */
  readonly profile: ProfileScenario | undefined;
}

/** The usage text. */
export const USAGE = `usage: npm run bench -- [--quick] [--out FILE] [--profile[=${PROFILE_SCENARIOS.join("|")}]]

  --quick            tiny sample sizes (keeps the harness working in CI; figures are meaningless)
  --out FILE         where to write results.json (default bench/results.json)
  --profile[=WHAT]   instead of the benchmark, run the daemon under node --cpu-prof with one workload
                     (default execute) and print its top self-time functions
`;

/** Parses argv; returns an Error with a readable message on bad flags. */
export function parseBenchArgs(argv: readonly string[], defaultOut: string): BenchOptions | Error {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean", default: false },
        out: { type: "string" },
        profile: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e: unknown) {
    // `--profile` with no value is allowed: parseArgs insists on one, so retry with the default.
    const i = argv.indexOf("--profile");
    if (i >= 0) return parseBenchArgs([...argv.slice(0, i), "--profile=execute", ...argv.slice(i + 1)], defaultOut);
    return new Error(e instanceof Error ? e.message : String(e));
  }
  if (values.help) return new Error("help");
  const profile = values.profile;
  if (profile !== undefined && !(PROFILE_SCENARIOS as readonly string[]).includes(profile)) {
    return new Error(`--profile takes one of ${PROFILE_SCENARIOS.join(", ")}, got ${JSON.stringify(profile)}`);
  }
  return {
    quick: values.quick,
    sizes: values.quick ? QUICK_SIZES : FULL_SIZES,
    out: values.out ?? defaultOut,
    profile: profile as ProfileScenario | undefined,
  };
}
