/**
 * The measurements of issue 6, one function per section. Each pushes its
 * figures (with goals) into the context; none asserts anything.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import path from "node:path";
import { ModuleStore } from "../src/cache/module-store.js";
import { argsEnvSha256, ReceiptSigner, sha256 } from "../src/receipt/receipt.js";
import { Outcome, type ExecuteRequest, type ExecuteResponse } from "../src/gen/pb/sandbox/v1/sandbox.js";
import { BenchDaemon } from "./bench-daemon.js";
import type { Sizes } from "./options.js";
import { measureJco } from "./peers/jco.js";
import { runMinimal } from "./peers/minimal-host.js";
import { NodeWasiRunner } from "./peers/node-wasi.js";
import type { Figure, Goal, Unit } from "./results.js";
import { timeRawRustc, type CompileSetup } from "./rustc-baseline.js";
import { summarize, timeConcurrent, timeSerial, type Summary } from "./stats.js";
import { BENCH_FUEL_LIMIT, fixtureSource, uniqueSource, type BenchPolicy } from "./workloads.js";

/** Concurrency levels of the Execute throughput figures. */
export const THROUGHPUT_CONCURRENCY = [1, 8, 32] as const;
/** Bytes in the MB of MB/s and RSS figures (MiB: the writer fixture writes 100 × 2^20 bytes). */
const BYTES_PER_MB = 2 ** 20;
/** Pause before reading an "idle" RSS, so start-up allocations have settled. */
const IDLE_SETTLE_MS = 1_000;

/** Goals (printed, never asserted): absolute figures, and ratios to floors measured in the same run (which a busy machine skews less). */
export const GOALS = {
  executeVsHealth: { op: "<=", value: 1.7 },
  throughputVsHealth: { op: ">=", value: 0.5 },
  cacheHitVsHealth: { op: "<=", value: 1.2 },
  startVsNodeStart: { op: "<=", value: 3 },
  cpuGuestRatio: { op: "<=", value: 1.02 },
  executeP50Ms: { op: "<=", value: 1.0 },
  throughputC32: { op: ">=", value: 2000 },
  cacheHitP50Ms: { op: "<=", value: 0.5 },
  coldCompileRatio: { op: "<=", value: 1.1 },
  cpuRatio: { op: "<=", value: 1.05 },
  fuelOverheadRatio: { op: "<=", value: 1.25 },
  streamMBps: { op: ">=", value: 200 },
  startMs: { op: "<=", value: 300 },
  rssIdleMB: { op: "<=", value: 100 },
  rssDriftMB: { op: "<=", value: 0 },
} as const satisfies Record<string, Goal>;

/** Shared state of one benchmark run. */
export interface BenchContext {
  readonly sizes: Sizes;
  /** Scratch directory of this run (removed by the caller). */
  readonly dir: string;
  /** The daemon sections 1-5 talk to. */
  readonly daemon: BenchDaemon;
  readonly cacheDir: string;
  /** Flags the daemons of this run are started with. */
  readonly daemonArgs: readonly string[];
  readonly setup: CompileSetup | undefined;
  readonly policy: BenchPolicy;
  readonly figures: Figure[];
  /** Progress line on stderr. */
  log(message: string): void;
}

/** Modules compiled once at the start and reused. */
export interface BenchModules {
  readonly hello: { readonly id: string; readonly module: WebAssembly.Module };
  readonly cpu: { readonly id: string; readonly module: WebAssembly.Module };
  readonly writer: { readonly id: string };
}

function sampled(id: string, section: number, label: string, unit: Unit, summary: Summary, extra: Partial<Figure> = {}): Figure {
  return { id, section, label, unit, value: summary.p50, summary, ...extra };
}

function ratio(id: string, section: number, label: string, numerator: Figure, denominator: Figure, extra: Partial<Figure> = {}): Figure {
  const value = numerator.value !== undefined && denominator.value !== undefined ? numerator.value / denominator.value : undefined;
  const na = value === undefined ? (denominator.na ?? numerator.na ?? "an operand was not measured") : undefined;
  return { id, section, label, unit: "×", value, note: `${numerator.id} p50 ÷ ${denominator.id} p50`, ...(na ? { na } : {}), ...extra };
}

function notMeasured(id: string, section: number, label: string, unit: Unit, na: string): Figure {
  return { id, section, label, unit, value: undefined, na };
}

/** Throws unless the run exited 0: a benchmark of failing runs would measure the wrong thing. */
function expectExited(response: ExecuteResponse, what: string): ExecuteResponse {
  if (response.outcome !== Outcome.OUTCOME_EXITED || response.exitCode !== 0) {
    throw new Error(
      `${what}: outcome ${Outcome[response.outcome]} exit ${response.exitCode}: ${response.message} ${response.stderr.toString().slice(0, 500)}`,
    );
  }
  return response;
}

/** Compiles a fixture through the daemon (failing loudly) and loads its bytes from the daemon's cache. */
async function compileFixture(ctx: BenchContext, name: string): Promise<{ id: string; module: WebAssembly.Module }> {
  const response = await ctx.daemon.client.compile({ input: { $case: "source", value: await fixtureSource(name) } });
  if (!response.ok) {
    throw new Error(`bench fixture ${name} does not compile: ${response.diagnostics.map((d) => d.message).join("; ")}`);
  }
  const bytes = await (await ModuleStore.open(ctx.cacheDir)).get(response.moduleId);
  if (!bytes) throw new Error(`module ${response.moduleId} is not in ${ctx.cacheDir}`);
  return { id: response.moduleId, module: new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>) };
}

/** Compiles the modules every section uses. */
export async function prepareModules(ctx: BenchContext): Promise<BenchModules> {
  ctx.log("compiling fixtures through the daemon");
  const hello = await compileFixture(ctx, "hello");
  const cpu = await compileFixture(ctx, "cpu_sort");
  const writer = await compileFixture(ctx, "write_100mb");
  return { hello, cpu, writer: { id: writer.id } };
}

function helloRequest(moduleId: string): Partial<ExecuteRequest> {
  return { target: { $case: "moduleId", value: moduleId } };
}

/** §1 and §2: Execute latency and throughput, then the floors and peers in the same process. */
export async function measureExecuteAndFloors(ctx: BenchContext, modules: BenchModules): Promise<void> {
  const { sizes, daemon } = ctx;
  const request = helloRequest(modules.hello.id);
  const execute = async (): Promise<void> => {
    expectExited(await daemon.client.execute(request), "hello");
  };
  ctx.log(`§1 Execute hello: ${sizes.warmupRuns} warm-up, ${sizes.latencyRuns} serial`);
  await timeSerial(sizes.warmupRuns, execute);
  const latency = sampled(
    "execute.latency",
    1,
    "Execute cached hello, concurrency 1, end to end over the unix socket",
    "ms",
    summarize(await timeSerial(sizes.latencyRuns, execute, sizes.serialBudgetMs)),
    {
      goal: GOALS.executeP50Ms,
    },
  );
  ctx.figures.push(latency);
  for (const concurrency of THROUGHPUT_CONCURRENCY) {
    ctx.log(`§1 throughput at concurrency ${concurrency}`);
    const rounds: number[] = [];
    for (let r = 0; r < sizes.throughputRounds; r++) {
      rounds.push((await timeConcurrent(sizes.throughputRunsPerRound, concurrency, execute)).perSecond);
    }
    ctx.figures.push(
      sampled(`execute.throughput.c${concurrency}`, 1, `Execute throughput, concurrency ${concurrency}`, "runs/s", summarize(rounds), {
        note: `${sizes.throughputRounds} rounds of ${sizes.throughputRunsPerRound} runs; N = rounds`,
        ...(concurrency === 32 ? { goal: GOALS.throughputC32 } : {}),
      }),
    );
  }

  ctx.log("§2 floors: Health/Check, raw V8, node:wasi, jco");
  await timeSerial(sizes.warmupRuns, () => daemon.health.check());
  const health = sampled(
    "floor.health",
    2,
    "No-op gRPC call to the same daemon (grpc.health.v1 Health/Check)",
    "ms",
    summarize(await timeSerial(sizes.floorRuns, () => daemon.health.check(), sizes.serialBudgetMs)),
  );
  const healthRounds: number[] = [];
  for (let r = 0; r < sizes.throughputRounds; r++) {
    healthRounds.push((await timeConcurrent(sizes.throughputRunsPerRound, 32, () => daemon.health.check())).perSecond);
  }
  const healthThroughput = sampled(
    "floor.health.throughput.c32",
    2,
    "Health/Check throughput on the same daemon, concurrency 32",
    "calls/s",
    summarize(healthRounds),
    {
      note: `${sizes.throughputRounds} rounds of ${sizes.throughputRunsPerRound} calls; N = rounds`,
    },
  );
  const runV8 = (): void => {
    if (runMinimal(modules.hello.module).exitCode !== 0) throw new Error("hello failed under the minimal host");
  };
  await timeSerial(sizes.warmupRuns, runV8);
  const v8 = sampled(
    "floor.v8",
    2,
    "Raw V8: new WebAssembly.Instance + _start, minimal host, in-process",
    "ms",
    summarize(await timeSerial(sizes.floorRuns, runV8, sizes.serialBudgetMs)),
  );
  const nodeWasi = new NodeWasiRunner();
  let wasi: Figure;
  try {
    const runWasi = (): void => {
      if (nodeWasi.run(modules.hello.module) !== 0) throw new Error("hello failed under node:wasi");
    };
    await timeSerial(sizes.warmupRuns, runWasi);
    wasi = sampled(
      "peer.node-wasi",
      2,
      "node:wasi in-process (no security boundary)",
      "ms",
      summarize(await timeSerial(sizes.floorRuns, runWasi, sizes.serialBudgetMs)),
    );
  } finally {
    nodeWasi.close();
  }
  const jcoDir = await mkdtemp(path.join(ctx.dir, "jco-"));
  const jcoBytes = await (await ModuleStore.open(ctx.cacheDir)).get(modules.hello.id);
  const jcoOutcome = await measureJco(jcoBytes!, sizes.jcoRuns, Math.min(sizes.warmupRuns, 20), jcoDir);
  const jco =
    "na" in jcoOutcome
      ? notMeasured("peer.jco", 2, "jco + preview2-shim in-process (component via the preview1 command adapter)", "ms", jcoOutcome.na)
      : sampled(
          "peer.jco",
          2,
          "jco + preview2-shim in-process (component via the preview1 command adapter)",
          "ms",
          summarize(jcoOutcome.samplesMs),
          {
            note: `one-time jco new + transpile: ${jcoOutcome.prepareMs.toFixed(0)} ms (not in the figure)`,
          },
        );
  ctx.figures.push(health, healthThroughput, v8, wasi, jco);
  const shortNames: [Figure, string][] = [
    [health, "Health/Check"],
    [v8, "raw V8"],
    [wasi, "node:wasi"],
    [jco, "jco + preview2-shim"],
  ];
  for (const [peer, name] of shortNames) {
    ctx.figures.push(
      ratio(
        `ratio.execute-vs-${peer.id}`,
        2,
        `Execute p50 ÷ ${name} p50`,
        latency,
        peer,
        peer === health ? { goal: GOALS.executeVsHealth } : {},
      ),
    );
  }
  const c32 = ctx.figures.find((f) => f.id === "execute.throughput.c32");
  if (c32) {
    ctx.figures.push(
      ratio(
        "ratio.execute-throughput-vs-floor.health.throughput.c32",
        2,
        "Execute runs/s ÷ Health calls/s, both at concurrency 32",
        c32,
        healthThroughput,
        {
          goal: GOALS.throughputVsHealth,
        },
      ),
    );
  }
}

/** §3: a CPU-bound module in sandboxd against the same bytes in raw V8. */
export async function measureCpuBound(ctx: BenchContext, modules: BenchModules): Promise<void> {
  const { sizes, daemon } = ctx;
  ctx.log(`§3 CPU-bound sort of 10^6 u64: ${sizes.cpuRuns} runs each`);
  const request = helloRequest(modules.cpu.id);
  const guestUs: number[] = [];
  const runDaemon = async (): Promise<void> => {
    guestUs.push(expectExited(await daemon.client.execute(request), "cpu_sort").durationUs);
  };
  const runV8 = (): void => {
    if (runMinimal(modules.cpu.module).exitCode !== 0) throw new Error("cpu_sort failed under the minimal host");
  };
  // One warm-up each: the first instantiation of a module pays for its tier-up.
  await runDaemon();
  runV8();
  guestUs.length = 0;
  const daemonSamples: number[] = [];
  const v8Samples: number[] = [];
  // Interleaved, so machine noise (other agents share these 2 cores) hits both alike.
  for (let i = 0; i < sizes.cpuRuns; i++) {
    daemonSamples.push(...(await timeSerial(1, runDaemon)));
    v8Samples.push(...(await timeSerial(1, runV8)));
  }
  const inDaemon = sampled("cpu.sandboxd", 3, "CPU-bound (sort 10^6 u64) in sandboxd, Execute end to end", "ms", summarize(daemonSamples));
  const inV8 = sampled("cpu.v8", 3, "CPU-bound, same module in raw V8 in-process", "ms", summarize(v8Samples));
  // The guest's own run time as the worker measures it: separates our host and worker from gRPC and dispatch.
  const guest = sampled(
    "cpu.sandboxd-guest",
    3,
    "CPU-bound in sandboxd, guest time only (ExecuteResponse.duration_us)",
    "ms",
    summarize(guestUs.map((us) => us / 1000)),
  );
  ctx.figures.push(
    inDaemon,
    guest,
    inV8,
    ratio("ratio.cpu", 3, "CPU-bound: sandboxd end to end ÷ raw V8", inDaemon, inV8, { goal: GOALS.cpuRatio }),
    ratio("ratio.cpu-guest", 3, "CPU-bound: sandboxd guest time ÷ raw V8", guest, inV8, { goal: GOALS.cpuGuestRatio }),
  );
}

/**
 * §3, fuel: the CPU-bound module with a fuel limit (its metered variant) against the same module
 * under the same policy without one, interleaved, as guest time; then what signing a receipt costs.
 */
export async function measureFuelAndReceipts(ctx: BenchContext, modules: BenchModules): Promise<void> {
  const { sizes, daemon } = ctx;
  ctx.log(`§3 fuel metering on vs off: ${sizes.cpuRuns} runs each`);
  const target = { $case: "moduleId" as const, value: modules.cpu.id };
  const off: number[] = [];
  const on: number[] = [];
  let fuel = 0;
  const runOff = async (): Promise<void> => {
    off.push(expectExited(await daemon.client.execute({ target, policy: ctx.policy.cpuPolicy }), "cpu_sort unmetered").durationUs / 1000);
  };
  const runOn = async (): Promise<void> => {
    const response = expectExited(await daemon.client.execute({ target, policy: ctx.policy.fuelPolicy }), "cpu_sort metered");
    fuel = response.fuelConsumed;
    on.push(response.durationUs / 1000);
  };
  // One warm-up each: the metered variant is a module of its own, compiled and tiered up on first use.
  await runOff();
  await runOn();
  off.length = 0;
  on.length = 0;
  for (let i = 0; i < sizes.cpuRuns; i++) {
    await runOff();
    await runOn();
  }
  const offFigure = sampled("fuel.off", 3, "CPU-bound, guest time, signed policy without fuel_limit (not metered)", "ms", summarize(off));
  const onFigure = sampled("fuel.on", 3, "CPU-bound, guest time, same policy with fuel_limit (metered)", "ms", summarize(on), {
    note: `fuel_consumed ${fuel}`,
  });
  ctx.figures.push(
    offFigure,
    onFigure,
    ratio("ratio.fuel", 3, "Fuel metering overhead: metered ÷ unmetered guest time", onFigure, offFigure, {
      goal: GOALS.fuelOverheadRatio,
    }),
  );

  ctx.log(`§3 receipt signing: ${sizes.latencyRuns} receipts`);
  const signer = await ReceiptSigner.load(await writeBenchReceiptKey(ctx.dir));
  const stdout = randomBytes(RECEIPT_BENCH_OUTPUT_BYTES);
  const signOne = (): void => {
    signer.sign({
      executionId: "00000000-0000-4000-8000-000000000000",
      moduleId: modules.cpu.id,
      policyId: "sandboxd-bench",
      policySha256: Buffer.from(sha256(ctx.policy.policy.policy)),
      policyKeyId: ctx.policy.policy.keyId,
      stdinSha256: Buffer.from(sha256(new Uint8Array(0))),
      argsEnvSha256: Buffer.from(argsEnvSha256([], new Map())),
      stdoutSha256: Buffer.from(sha256(stdout)),
      stderrSha256: Buffer.from(sha256(new Uint8Array(0))),
      outcome: Outcome.OUTCOME_EXITED,
      exitCode: 0,
      fuelConsumed: fuel,
      fuelLimit: BENCH_FUEL_LIMIT,
      denialCount: 0,
      startedAtUnixMs: Date.now(),
      durationUs: 1,
      daemonVersion: "bench",
    });
  };
  await timeSerial(sizes.warmupRuns, signOne);
  ctx.figures.push(
    sampled(
      "receipt.sign",
      3,
      `Receipt per run: digests (${RECEIPT_BENCH_OUTPUT_BYTES / 1024} KiB stdout) + encode + Ed25519 sign, in-process`,
      "ms",
      summarize(await timeSerial(sizes.latencyRuns, signOne, sizes.serialBudgetMs)),
    ),
  );
}

/** Size of the stdout a benchmarked receipt digests: a typical JSON result. */
const RECEIPT_BENCH_OUTPUT_BYTES = 4096;

/** Writes a throwaway Ed25519 receipt key under `dir`; returns its path. */
async function writeBenchReceiptKey(dir: string): Promise<string> {
  const file = path.join(dir, "bench-receipts.key");
  await writeFile(file, generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  return file;
}

/** §4: cold Compile against raw rustc (direct and under bubblewrap) per source; cache-hit Compile. */
export async function measureCompile(ctx: BenchContext): Promise<void> {
  const { sizes, daemon, setup } = ctx;
  for (const name of sizes.compileSources) {
    const label = `${name}.rs`;
    const source = await fixtureSource(name);
    ctx.log(`§4 cold compile ${label}: ${sizes.coldCompileRuns} × (daemon, rustc, rustc under bwrap)`);
    if (!setup) {
      ctx.figures.push(
        notMeasured(`compile.cold.${name}`, 4, `Cold Compile ${label}`, "ms", "no rustc with a WASI target on this machine"),
      );
      continue;
    }
    const daemonMs: number[] = [];
    const rawMs: number[] = [];
    const bwrapMs: number[] = [];
    let failure: string | undefined;
    for (let i = 0; i < sizes.coldCompileRuns && failure === undefined; i++) {
      // Interleaved, and each with a source never seen before, so nothing is cached anywhere.
      const started = performance.now();
      const response = await daemon.client.compile({ input: { $case: "source", value: uniqueSource(source, randomUUID()) } });
      if (!response.ok || response.cacheHit) {
        failure = response.ok
          ? "the daemon answered from its cache"
          : `the daemon's Compile failed: ${response.diagnostics
              .map((d) => d.message)
              .join("; ")
              .slice(0, 300)}`;
        break;
      }
      daemonMs.push(performance.now() - started);
      rawMs.push(await timeRawRustc(setup, uniqueSource(source, randomUUID()), false));
      if (setup.bwrap) bwrapMs.push(await timeRawRustc(setup, uniqueSource(source, randomUUID()), true));
    }
    if (failure !== undefined) {
      ctx.figures.push(notMeasured(`compile.cold.${name}`, 4, `Cold Compile ${label} via the daemon`, "ms", failure));
      continue;
    }
    const cold = sampled(`compile.cold.${name}`, 4, `Cold Compile ${label} via the daemon`, "ms", summarize(daemonMs));
    const raw = sampled(`compile.rustc.${name}`, 4, `Raw rustc ${label}, same flags, no daemon, no sandbox`, "ms", summarize(rawMs));
    ctx.figures.push(
      cold,
      raw,
      ratio(`ratio.compile.${name}`, 4, `Cold Compile ${label} ÷ raw rustc`, cold, raw, { goal: GOALS.coldCompileRatio }),
    );
    if (setup.bwrap) {
      const hermetic = sampled(
        `compile.bwrap.${name}`,
        4,
        `rustc ${label} under bubblewrap (hermeticCommand), no daemon`,
        "ms",
        summarize(bwrapMs),
      );
      ctx.figures.push(hermetic, ratio(`ratio.compile-bwrap.${name}`, 4, `Cold Compile ${label} ÷ rustc under bubblewrap`, cold, hermetic));
    }
  }
  ctx.log(`§4 cache-hit Compile: ${sizes.cacheHitRuns}`);
  const hello = { input: { $case: "source" as const, value: await fixtureSource("hello") } };
  const hit = async (): Promise<void> => {
    const response = await daemon.client.compile(hello);
    if (!response.cacheHit) throw new Error("hello Compile was not a cache hit");
  };
  await timeSerial(sizes.warmupRuns, hit);
  const cacheHit = sampled(
    "compile.cache-hit",
    4,
    "Compile cache hit (hello.rs), end to end",
    "ms",
    summarize(await timeSerial(sizes.cacheHitRuns, hit, sizes.serialBudgetMs)),
    { goal: GOALS.cacheHitP50Ms },
  );
  ctx.figures.push(cacheHit);
  const health = ctx.figures.find((f) => f.id === "floor.health");
  if (health)
    ctx.figures.push(
      ratio("ratio.compile.cache-hit-vs-floor.health", 4, "Compile cache hit p50 ÷ Health/Check p50", cacheHit, health, {
        goal: GOALS.cacheHitVsHealth,
      }),
    );
}

/** The one-mistake script of the repair figures (bench/fixtures/repair_one_mistake.rs). */
const REPAIR_FIXTURE = "repair_one_mistake";

/**
 * §4: Compile with `repair` of a script with one mistake against the plain failing compile of the
 * same script, both cold (interleaved, each with a source never seen before); and the same repair
 * again, served from the cache.
 */
export async function measureRepair(ctx: BenchContext): Promise<void> {
  const { sizes, daemon, setup } = ctx;
  const label = `${REPAIR_FIXTURE}.rs`;
  if (!setup) {
    ctx.figures.push(
      notMeasured("compile.repair.cold", 4, `Compile with repair, ${label}`, "ms", "no rustc with a WASI target on this machine"),
    );
    return;
  }
  const source = await fixtureSource(REPAIR_FIXTURE);
  ctx.log(
    `§4 repair ${label}: ${sizes.coldCompileRuns} × (failing compile, compile with repair, compile of the fixed source), then ${sizes.cacheHitRuns} repairs from the cache`,
  );
  const failMs: number[] = [];
  const repairMs: number[] = [];
  const fixedMs: number[] = [];
  let repeated = "";
  for (let i = 0; i < sizes.coldCompileRuns; i++) {
    let started = performance.now();
    const failed = await daemon.client.compile({ input: { $case: "source", value: uniqueSource(source, randomUUID()) } });
    failMs.push(performance.now() - started);
    if (failed.ok || failed.cacheHit) throw new Error(`${label} was meant to fail cold: ok=${failed.ok} cache_hit=${failed.cacheHit}`);
    repeated = uniqueSource(source, randomUUID());
    started = performance.now();
    const repaired = await daemon.client.compile({ input: { $case: "source", value: repeated }, repair: true });
    repairMs.push(performance.now() - started);
    if (!repaired.repair || repaired.repair.cacheHit || repaired.repair.rounds !== 1)
      throw new Error(`${label} was meant to be repaired cold in one round`);
    // What the agent compiles after fixing the mistake itself: the repaired source, cold.
    started = performance.now();
    const fixed = await daemon.client.compile({ input: { $case: "source", value: uniqueSource(repaired.repair.source, randomUUID()) } });
    fixedMs.push(performance.now() - started);
    if (!fixed.ok || fixed.cacheHit) throw new Error(`the repaired ${label} was meant to compile cold`);
  }
  const fail = sampled("compile.fail.cold", 4, `Cold Compile of ${label} (fails, one error)`, "ms", summarize(failMs));
  const fixed = sampled("compile.fixed.cold", 4, `Cold Compile of ${label} once fixed (compiles)`, "ms", summarize(fixedMs));
  const repair = sampled(
    "compile.repair.cold",
    4,
    `Cold Compile with repair of ${label} (fails, then one round compiles)`,
    "ms",
    summarize(repairMs),
  );
  const hit = async (): Promise<void> => {
    const response = await daemon.client.compile({ input: { $case: "source", value: repeated }, repair: true });
    if (!response.repair?.cacheHit) throw new Error("the repeated repair was not served from the cache");
  };
  const hits = sampled(
    "compile.repair.cache-hit",
    4,
    `Compile with repair of ${label} again, from the cache`,
    "ms",
    summarize(await timeSerial(sizes.cacheHitRuns, hit, sizes.serialBudgetMs)),
  );
  const both = fail.value !== undefined && fixed.value !== undefined ? fail.value + fixed.value : undefined;
  ctx.figures.push(
    fail,
    fixed,
    repair,
    ratio("ratio.compile.repair", 4, "Cold Compile with repair ÷ cold failing Compile", repair, fail),
    {
      id: "ratio.compile.repair-vs-two-compiles",
      section: 4,
      label:
        "Cold Compile with repair ÷ (failing Compile + Compile once fixed): what repair adds to the two compiles an agent's own fix costs",
      unit: "×",
      value: both === undefined || repair.value === undefined ? undefined : repair.value / both,
      note: "compile.repair.cold p50 ÷ (compile.fail.cold p50 + compile.fixed.cold p50)",
    },
    hits,
  );
}

/** §5: StreamOutput time to first byte and throughput of a script writing N MiB. */
export async function measureStream(ctx: BenchContext, modules: BenchModules): Promise<void> {
  const { sizes, daemon } = ctx;
  ctx.log(`§5 StreamOutput of ${sizes.streamMiB} MiB: ${sizes.streamRuns} runs`);
  const expected = sizes.streamMiB * BYTES_PER_MB;
  const request: Partial<ExecuteRequest> = {
    target: { $case: "moduleId", value: modules.writer.id },
    args: [String(sizes.streamMiB)],
    policy: ctx.policy.policy,
  };
  const ttfb: number[] = [];
  const mbps: number[] = [];
  for (let i = 0; i < sizes.streamRuns + 1; i++) {
    const events = await daemon.client.stream(request);
    const last = events[events.length - 1];
    const finished = last?.event.event?.$case === "finished" ? last.event.event.value : undefined;
    if (!finished) throw new Error("StreamOutput ended without a finished event");
    expectExited(finished, "write_100mb");
    let bytes = 0;
    let first: number | undefined;
    for (const { event, atMs } of events) {
      if (event.event?.$case !== "stdout") continue;
      first ??= atMs;
      bytes += event.event.value.length;
    }
    if (bytes !== expected) throw new Error(`StreamOutput delivered ${bytes} bytes, expected ${expected}`);
    if (i === 0) continue; // warm-up
    ttfb.push(first!);
    mbps.push(bytes / BYTES_PER_MB / (last!.atMs / 1000));
  }
  ctx.figures.push(
    sampled("stream.ttfb", 5, `StreamOutput time to first stdout byte (${sizes.streamMiB} MiB writer)`, "ms", summarize(ttfb)),
    sampled(
      "stream.throughput",
      5,
      `StreamOutput throughput, ${sizes.streamMiB} MiB in 64 KiB writes, call start to end`,
      "MB/s",
      summarize(mbps),
      {
        goal: GOALS.streamMBps,
        note: "MB = 2^20 bytes; signed policy raises max_output_bytes",
      },
    ),
  );
}

/** Spawn of `node -e 0` to its exit, in ms: the floor of any Node daemon's start. */
function timeNodeStart(): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`node -e 0 exited with ${code}`))));
  });
}

/** §6: daemon start to SERVING, and RSS idle, after N/2 and after N runs (the drift), on fresh daemons. */
export async function measureLifecycle(ctx: BenchContext, modules: BenchModules): Promise<void> {
  const { sizes } = ctx;
  ctx.log(`§6 daemon start to SERVING: ${sizes.startRuns} starts, each after a bare node start`);
  const startMs: number[] = [];
  const nodeStartMs: number[] = [];
  const idleMB: number[] = [];
  for (let i = 0; i < sizes.startRuns; i++) {
    // Interleaved, so machine noise hits both alike.
    nodeStartMs.push(await timeNodeStart());
    const daemon = await BenchDaemon.start({ dir: ctx.dir, cacheDir: ctx.cacheDir, args: ctx.daemonArgs, socketName: `start-${i}.sock` });
    try {
      startMs.push(daemon.startMs);
      await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
      idleMB.push(await daemon.rssMB());
    } finally {
      await daemon.stop();
    }
  }
  const serving = sampled("start.serving", 6, "Daemon start: spawn of the CLI to Health SERVING", "ms", summarize(startMs), {
    goal: GOALS.startMs,
  });
  const nodeStart = sampled("floor.node-start", 6, "Bare Node start: spawn of `node -e 0` to its exit", "ms", summarize(nodeStartMs));
  ctx.figures.push(
    serving,
    nodeStart,
    ratio("ratio.start-vs-floor.node-start", 6, "Daemon start p50 ÷ bare Node start p50", serving, nodeStart, {
      goal: GOALS.startVsNodeStart,
    }),
    sampled("rss.idle", 6, `Daemon RSS idle (${IDLE_SETTLE_MS} ms after SERVING, no calls yet)`, "MB", summarize(idleMB), {
      goal: GOALS.rssIdleMB,
    }),
  );

  const half = Math.floor(sizes.rssRuns / 2);
  ctx.log(`§6 RSS: idle, after ${half} and after ${sizes.rssRuns} hello runs at concurrency 32`);
  const daemon = await BenchDaemon.start({ dir: ctx.dir, cacheDir: ctx.cacheDir, args: ctx.daemonArgs, socketName: "rss.sock" });
  try {
    const request = helloRequest(modules.hello.id);
    const execute = async (): Promise<void> => {
      expectExited(await daemon.client.execute(request), "hello");
    };
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const idle = await daemon.rssMB();
    await timeConcurrent(half, 32, execute);
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const afterHalf = await daemon.rssMB();
    await timeConcurrent(sizes.rssRuns - half, 32, execute);
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const afterAll = await daemon.rssMB();
    const n = (k: number): string => k.toLocaleString("en-US");
    ctx.figures.push(
      {
        id: "rss.after-n",
        section: 6,
        label: `Daemon RSS after ${n(sizes.rssRuns)} runs (same daemon idle before: ${idle.toFixed(1)} MB)`,
        unit: "MB",
        value: afterAll,
        note: `growth from idle ${(afterAll - idle).toFixed(1)} MB (includes JIT and first-run allocations)`,
      },
      {
        id: "rss.drift",
        section: 6,
        label: `RSS drift: after ${n(sizes.rssRuns)} runs − after ${n(half)}`,
        unit: "MB",
        value: afterAll - afterHalf,
        goal: GOALS.rssDriftMB,
        note: `growth of a warm daemon over its last ${n(sizes.rssRuns - half)} runs; RSS after ${n(half)}: ${afterHalf.toFixed(1)} MB`,
      },
    );
  } finally {
    await daemon.stop();
  }
}
