/**
 * `npm run bench`: measures sandboxd beside its floor and its peers in one run
 * (issue 6), prints a markdown table and writes results.json. `--quick` keeps
 * the harness working in CI; `--profile` runs the daemon under `--cpu-prof`.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { BenchDaemon } from "./bench-daemon.js";
import { parseBenchArgs, USAGE, type BenchOptions, type ProfileScenario, type Sizes } from "./options.js";
import { formatProfiles, summarizeProfileDir } from "./profile-summary.js";
import { describeMachine, markdownTable, missFactor, type BenchResults, type Figure } from "./results.js";
import { detectCompileSetup, REPO_ROOT, type CompileSetup } from "./rustc-baseline.js";
import {
  measureCompile,
  measureCpuBound,
  measureFuelAndReceipts,
  measureExecuteAndFloors,
  measureLifecycle,
  measureRepair,
  measureStream,
  prepareModules,
  type BenchContext,
} from "./scenarios.js";
import { makeSignedPolicy, type BenchPolicy } from "./workloads.js";
import { measureRemoteCache } from "./remote-cache.js";

/** Output cap the bench's signed policy grants: room for the 100 MiB writer. */
const BENCH_MAX_OUTPUT_BYTES = 128 * 2 ** 20;
/** Wall-clock limit the bench's signed policy grants a run (a slow stream must not be cut). */
const BENCH_TIMEOUT_MS = 120_000;
/** Functions listed per profiled thread. */
const PROFILE_TOP_N = 20;

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/** Flags of every daemon in the run: unsigned hello runs, and the bench authority's key for the stream policy. */
function daemonArgs(policy: BenchPolicy): string[] {
  return ["--allow-unsigned", "--trusted-keys", policy.trustedKeysDir];
}

async function withContext<T>(
  sizes: Sizes,
  nodeArgs: readonly string[],
  body: (ctx: BenchContext) => Promise<T>,
): Promise<{ result: T; setup: CompileSetup | undefined }> {
  const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-bench-"));
  let daemon: BenchDaemon | undefined;
  try {
    const [setup, policy] = await Promise.all([
      detectCompileSetup(),
      makeSignedPolicy(path.join(dir, "policy"), { maxOutputBytes: BENCH_MAX_OUTPUT_BYTES, timeoutMs: BENCH_TIMEOUT_MS }),
    ]);
    const cacheDir = path.join(dir, "cache");
    const args = daemonArgs(policy);
    daemon = await BenchDaemon.start({ dir, cacheDir, args, nodeArgs });
    const ctx: BenchContext = { sizes, dir, daemon, cacheDir, daemonArgs: args, setup, policy, figures: [], log };
    const result = await body(ctx);
    return { result, setup };
  } finally {
    const stderr = daemon?.stderr() ?? "";
    await daemon?.stop();
    if (/"level":"error"/.test(stderr)) log(`the daemon logged errors:\n${stderr.slice(-4000)}`);
    await rm(dir, { recursive: true, force: true });
  }
}

async function runBenchmark(options: BenchOptions): Promise<void> {
  const started = performance.now();
  const { result: figures, setup } = await withContext(options.sizes, [], async (ctx) => {
    if (options.only === "remote-cache") {
      await measureRemoteCache(ctx);
      return ctx.figures;
    }
    const modules = await prepareModules(ctx);
    await measureExecuteAndFloors(ctx, modules);
    await measureCpuBound(ctx, modules);
    await measureFuelAndReceipts(ctx, modules);
    await measureCompile(ctx);
    await measureRepair(ctx);
    await measureStream(ctx, modules);
    await measureLifecycle(ctx, modules);
    await measureRemoteCache(ctx);
    return ctx.figures;
  });
  const results: BenchResults = {
    date: new Date().toISOString(),
    mode: options.quick ? "quick" : "full",
    machine: describeMachine(),
    node: process.version,
    rustc: setup?.toolchain.version ?? "none",
    durationS: (performance.now() - started) / 1000,
    figures,
  };
  await mkdir(path.dirname(options.out), { recursive: true });
  await writeFile(options.out, JSON.stringify(results, null, 2) + "\n");
  process.stdout.write(markdownTable(results) + "\n\n" + worstMisses(figures) + "\n");
  log(`wrote ${options.out}`);
}

/** One line naming the goals missed, worst first: what --profile should look at. */
function worstMisses(figures: readonly Figure[]): string {
  const missed = figures
    .map((f) => ({ f, miss: missFactor(f) }))
    .filter((m): m is { f: Figure; miss: number } => m.miss !== undefined && m.miss > 1)
    .sort((a, b) => b.miss - a.miss);
  if (missed.length === 0) return "All goals met.";
  return `Goals missed, worst first: ${missed.map((m) => `${m.f.id} (${m.miss.toFixed(2)}× off)`).join(", ")}`;
}

/** Runs one workload against a daemon started under node --cpu-prof and prints where its threads spend time. */
async function runProfile(options: BenchOptions, scenario: ProfileScenario): Promise<void> {
  const profileDir = await mkdtemp(path.join(tmpdir(), "sandboxd-profile-"));
  const nodeArgs = ["--cpu-prof", "--cpu-prof-dir", profileDir];
  log(`profiling the daemon under the ${scenario} workload; profiles go to ${profileDir}`);
  await withContext(options.sizes, nodeArgs, async (ctx) => {
    if (scenario === "start") {
      log(`spawn to SERVING under --cpu-prof: ${ctx.daemon.startMs.toFixed(0)} ms`);
      return;
    }
    const modules = await prepareModules(ctx);
    if (scenario === "execute") await measureExecuteAndFloors(ctx, modules);
    else if (scenario === "cpu") await measureCpuBound(ctx, modules);
    else if (scenario === "compile") await measureCompile(ctx);
    else if (scenario === "repair") await measureRepair(ctx);
    else await measureStream(ctx, modules);
    process.stdout.write(
      markdownTable({
        date: new Date().toISOString(),
        mode: options.quick ? "quick" : "full",
        machine: describeMachine(),
        node: process.version,
        rustc: ctx.setup?.toolchain.version ?? "none",
        durationS: 0,
        figures: ctx.figures,
      }) + "\n\n(figures taken under --cpu-prof: slower than a normal run)\n",
    );
  });
  const summaries = await summarizeProfileDir(profileDir, PROFILE_TOP_N);
  if (summaries.length === 0) throw new Error(`the daemon wrote no .cpuprofile into ${profileDir}`);
  process.stdout.write(`\n## Daemon CPU profile (${scenario}): top self time per thread\n${formatProfiles(summaries)}\n`);
  log(`open the .cpuprofile files in ${profileDir} with Chrome DevTools for call trees`);
}

async function main(): Promise<void> {
  const options = parseBenchArgs(process.argv.slice(2), path.join(REPO_ROOT, "bench", "results.json"));
  if (options instanceof Error) {
    process.stderr.write(options.message === "help" ? USAGE : `bench: ${options.message}\n\n${USAGE}`);
    process.exitCode = options.message === "help" ? 0 : 2;
    return;
  }
  if (options.profile) await runProfile(options, options.profile);
  else await runBenchmark(options);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
