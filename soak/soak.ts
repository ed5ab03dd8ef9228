/**
 * One soak, start to end: build the world and start the daemon, compile the
 * guest (a cold compile), warm up, take the baseline, run the seeded mix on N
 * lanes for the load phase, drain, let the daemon settle, check the invariants.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { healthStatus, register, helloWasm } from "../test/helpers/hostile.js";
import {
  check,
  resourcesSettled,
  rssDriftMiB,
  RSS_DRIFT_LIMIT_MIB,
  sharedLogProblems,
  FD_TOLERANCE,
  THREAD_TOLERANCE,
  type InvariantResult,
} from "./invariants.js";
import { KINDS, type AppendRecord, type Kind, type Observation, type SoakContext } from "./kinds.js";
import type { SoakOptions } from "./options.js";
import { describeFds, sampleProcess, type ProcessSample } from "./probes.js";
import { buildResults, type CallRecord, type SoakResults } from "./report.js";
import { Rng } from "./rng.js";
import { createWorld, filesUnder, guestSource, sentinelHash, SOAK_MAX_TIMEOUT_MS, type World } from "./world.js";

/** A call with no answer after this long is lost (a cold compile on a loaded machine takes well under it). */
const CALL_HANG_LIMIT_MS = 120_000;
/** Pause after the warm-up and after the drain before the daemon's resources are read. */
const SETTLE_MS = 1_000;
/** How long the daemon may take, after the drain, to get back to its baseline fds and threads. */
const SETTLE_TIMEOUT_MS = 15_000;
/** Interval between two readings of the daemon's fds, threads and RSS during the load. */
const SAMPLE_INTERVAL_MS = 500;
/** How long to keep watching fds that did not settle: past the longest timeout_ms a soak policy grants. */
const LATE_RELEASE_WAIT_MS = SOAK_MAX_TIMEOUT_MS + 15_000;
/** Window over which the daemon's CPU use is read while it should be idle (a guest left spinning uses a whole core). */
const IDLE_CPU_WINDOW_MS = 5_000;
/** How long a SIGHUP may take to show up as "trusted keys reloaded" in the daemon's log. */
const RELOAD_WAIT_MS = 20_000;
/** The daemon's log line of a finished reload. */
const RELOAD_LINE = "trusted keys reloaded";
/** Kinds of the warm-up: each path the load takes (a worker replaced, a compile cache hit, a stream) runs once before the baseline. */
const WARMUP_KINDS = [
  "echo",
  "echo-stream",
  "mounted",
  "timeout-spin-mounts",
  "cancel-mounts",
  "cache-hit",
  "policy-refusal",
  "shared-append",
];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Progress on stderr (stdout carries only the report). */
export type Log = (message: string) => void;

/** Runs a soak and returns its results; the caller prints and writes them. Never throws for what the daemon does. */
export async function runSoak(options: SoakOptions, log: Log): Promise<SoakResults> {
  const startedAt = performance.now();
  const rng = new Rng(options.seed);
  log(`seed ${options.seed}; starting the daemon`);
  const world = await createWorld();
  try {
    return await soakWorld(world, options, rng, log, startedAt);
  } finally {
    await world.close();
  }
}

async function soakWorld(world: World, options: SoakOptions, rng: Rng, log: Log, startedAt: number): Promise<SoakResults> {
  const pid = world.daemon.process.pid!;
  let death: string | undefined;
  const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
    death = `pid ${pid} exited with ${signal ?? `code ${code}`} after ${((performance.now() - startedAt) / 1000).toFixed(1)} s`;
    log(`THE DAEMON DIED: ${death}`);
  };
  world.daemon.process.once("exit", onExit);
  try {
    return await soakDaemon(world, options, rng, log, startedAt, pid, () => death);
  } finally {
    // From here on the daemon is stopped on purpose.
    world.daemon.process.off("exit", onExit);
  }
}

async function soakDaemon(
  world: World,
  options: SoakOptions,
  rng: Rng,
  log: Log,
  startedAt: number,
  pid: number,
  deathOf: () => string | undefined,
): Promise<SoakResults> {
  const sentinelBefore = await sentinelHash(world.paths);

  log("compiling the soak guest (cold compile)");
  const source = await guestSource();
  const compiled = await world.client.compile({ input: { $case: "source", value: source } });
  if (!compiled.ok) throw new Error(`the soak guest did not compile:\n${compiled.diagnostics.map((d) => d.rendered).join("\n")}`);
  const helloId = await register(world.daemon, helloWasm());

  let reloadScan = 0;
  let reloadsSeen = 0;
  const countReloads = (): number => {
    const logs = world.daemon.logs();
    for (let at = logs.indexOf(RELOAD_LINE, reloadScan); at >= 0; at = logs.indexOf(RELOAD_LINE, reloadScan)) {
      reloadsSeen++;
      reloadScan = at + RELOAD_LINE.length;
    }
    return reloadsSeen;
  };
  const appends: AppendRecord[] = [];
  const ctx: SoakContext = {
    world,
    guestId: compiled.moduleId,
    guestSource: source,
    helloId,
    appends,
    reload: async (kick) => {
      const before = countReloads();
      await kick();
      const deadline = Date.now() + RELOAD_WAIT_MS;
      while (countReloads() <= before) {
        if (Date.now() > deadline) throw new Error(`no "${RELOAD_LINE}" in the daemon's log ${RELOAD_WAIT_MS} ms after SIGHUP`);
        await sleep(20);
      }
    },
  };

  const records: CallRecord[] = [];
  let seq = 0;
  const runCall = async (kind: Kind, laneRng: Rng, lane: number): Promise<void> => {
    const mySeq = seq++;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const lost = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), CALL_HANG_LIMIT_MS)));
    const answered = kind.run({ ctx, rng: laneRng, seq: mySeq, lane }).catch(
      (e: unknown): Observation => ({
        label: "harness error",
        verdict: "unexpected",
        detail: e instanceof Error ? e.message : String(e),
      }),
    );
    const obs = await Promise.race([answered, lost]);
    clearTimeout(timer);
    const latencyMs = performance.now() - started;
    const record: CallRecord = obs
      ? {
          kind: kind.name,
          seq: mySeq,
          lane,
          label: obs.label,
          verdict: obs.verdict,
          latencyMs,
          ...(obs.detail ? { detail: obs.detail } : {}),
        }
      : { kind: kind.name, seq: mySeq, lane, label: "LOST", verdict: "lost", latencyMs, detail: `no answer in ${CALL_HANG_LIMIT_MS} ms` };
    records.push(record);
    if (record.verdict !== "ok")
      log(`${record.kind} #${record.seq}: ${record.verdict} ${record.label}${record.detail ? ` (${record.detail.slice(0, 300)})` : ""}`);
  };

  log("warming up");
  const byName = new Map(KINDS.map((k) => [k.name, k]));
  for (const name of WARMUP_KINDS) await runCall(byName.get(name)!, rng.fork(), 0);
  await sleep(SETTLE_MS);
  const baseline = await sampleProcess(pid);
  log(`baseline: ${baseline.fds} fds, ${baseline.threads} threads, ${baseline.rssMiB.toFixed(0)} MiB RSS`);

  // The load: lanes run calls back to back. First every kind once (in a seeded order), so even a short
  // soak covers them all; then a weighted random mix. Exclusive kinds never overlap their group.
  const coverage = rng.shuffle(KINDS);
  const busy = new Map<string, Promise<void>>();
  const loadStarted = performance.now();
  const loadEnds = loadStarted + options.durationMs;
  const samples: ProcessSample[] = [];
  const stopping = (): boolean => deathOf() !== undefined || performance.now() >= loadEnds;
  const sampler = setInterval(() => {
    if (deathOf() === undefined)
      sampleProcess(pid).then(
        (s) => samples.push(s),
        () => undefined,
      );
  }, SAMPLE_INTERVAL_MS);
  const lane = async (i: number, laneRng: Rng): Promise<void> => {
    while (!stopping()) {
      let kind = coverage.shift();
      if (kind?.exclusive) while (busy.has(kind.exclusive)) await busy.get(kind.exclusive);
      while (kind === undefined || (kind.exclusive !== undefined && busy.has(kind.exclusive)))
        kind = laneRng.weighted(KINDS, (k) => k.weight);
      if (kind.exclusive === undefined) {
        await runCall(kind, laneRng, i);
        continue;
      }
      const group = kind.exclusive;
      const done = runCall(kind, laneRng, i);
      busy.set(group, done);
      await done;
      busy.delete(group);
    }
  };
  log(`load: ${options.concurrency} lanes for ${(options.durationMs / 1000).toFixed(0)} s`);
  const lanes = Array.from({ length: options.concurrency }, (_, i) => lane(i, rng.fork()));
  const progress = setInterval(() => {
    const s = samples[samples.length - 1];
    log(
      `${records.length} calls, ${records.filter((r) => r.verdict !== "ok").length} not ok${s ? `; daemon ${s.fds} fds, ${s.threads} threads, ${s.rssMiB.toFixed(0)} MiB` : ""}`,
    );
  }, 10_000);
  // Bounded: a lane stops taking calls at the end of the load, and each call ends or is lost within CALL_HANG_LIMIT_MS.
  await Promise.all(lanes);
  const loadS = (performance.now() - loadStarted) / 1000;
  clearInterval(progress);
  clearInterval(sampler);

  const logsAtLoadEnd = world.daemon.logs().length;
  log("settling");
  let end: ProcessSample | undefined;
  if (deathOf() === undefined) {
    await sleep(SETTLE_MS);
    const settleDeadline = performance.now() + SETTLE_TIMEOUT_MS;
    for (;;) {
      end = await sampleProcess(pid).catch(() => undefined);
      const settled = end !== undefined && end.fds <= baseline.fds + FD_TOLERANCE && end.threads <= baseline.threads + THREAD_TOLERANCE;
      const tmpEmpty = (await readdir(world.paths.tmp).catch(() => [])).length === 0;
      if ((settled && tmpEmpty) || end === undefined || performance.now() > settleDeadline) break;
      await sleep(250);
    }
  }
  let lateRelease: string | undefined;
  if (end && end.fds > baseline.fds + FD_TOLERANCE) {
    log(`the daemon's fds after the soak:\n  ${(await describeFds(pid).catch(() => [])).join("\n  ")}`);
    lateRelease = await watchLateRelease(world, pid, baseline, logsAtLoadEnd, log);
  }

  const invariants = await checkInvariants({ world, pid, death: deathOf(), records, baseline, end, samples, sentinelBefore, appends });
  if (lateRelease) {
    const i = invariants.findIndex((v) => v.name === "fds back to baseline");
    if (i >= 0) invariants[i] = { ...invariants[i]!, detail: `${invariants[i]!.detail}; ${lateRelease}` };
  }
  const rss = samples.map((s) => s.rssMiB);
  return buildResults({
    mode: options.quick ? "quick" : "full",
    seed: options.seed,
    concurrency: options.concurrency,
    loadS,
    totalS: (performance.now() - startedAt) / 1000,
    daemonPid: pid,
    daemonDeath: deathOf(),
    kindNames: KINDS.map((k) => k.name),
    records,
    process: { baseline, end, maxRssMiB: Math.max(baseline.rssMiB, ...rss), rssDriftMiB: rssDriftMiB(rss), rssSamplesMiB: rss },
    invariants,
  });
}

/**
 * Diagnoses fds that did not come back in the settle period: is a guest still running after its call
 * ended (its fds go when its own timeout fires, and the daemon burns CPU meanwhile if it spins), or are
 * they gone for good? Polls up to the longest timeout a soak policy grants, and says which it was.
 */
async function watchLateRelease(world: World, pid: number, baseline: ProcessSample, logsAtLoadEnd: number, log: Log): Promise<string> {
  const cpuTicks = async (): Promise<number> => {
    const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks
  };
  const started = performance.now();
  const ticksBefore = await cpuTicks().catch(() => Number.NaN);
  let cpuNote = "";
  log(`waiting up to ${(LATE_RELEASE_WAIT_MS / 1000).toFixed(0)} s to see whether the extra fds are released late`);
  while (performance.now() - started < LATE_RELEASE_WAIT_MS) {
    await sleep(1_000);
    if (!cpuNote && performance.now() - started >= IDLE_CPU_WINDOW_MS) {
      const ticks = (await cpuTicks().catch(() => Number.NaN)) - ticksBefore;
      cpuNote = `; the idle daemon used ${ticks} CPU ticks in ${IDLE_CPU_WINDOW_MS / 1000} s`;
    }
    const now = await sampleProcess(pid).catch(() => undefined);
    if (now === undefined) return `the daemon went away while waiting${cpuNote}`;
    if (now.fds <= baseline.fds + FD_TOLERANCE) {
      const late = world.daemon
        .logs()
        .slice(logsAtLoadEnd)
        .split("\n")
        .filter((l) => l.includes('"message":"execute"') || l.includes('"message":"stream"'));
      return `released ${((performance.now() - started) / 1000).toFixed(0)} s after the settle period (a guest outlived its call; runs the daemon finished after the load: ${late.length}${late.length ? `, last: ${late[late.length - 1]!.slice(0, 200)}` : ""})${cpuNote}`;
    }
  }
  return `still held ${(LATE_RELEASE_WAIT_MS / 1000).toFixed(0)} s after the settle period: leaked${cpuNote}`;
}

interface InvariantInput {
  readonly world: World;
  readonly pid: number;
  readonly death: string | undefined;
  readonly records: readonly CallRecord[];
  readonly baseline: ProcessSample;
  readonly end: ProcessSample | undefined;
  readonly samples: readonly ProcessSample[];
  readonly sentinelBefore: string;
  readonly appends: readonly AppendRecord[];
}

async function checkInvariants(i: InvariantInput): Promise<InvariantResult[]> {
  const { world, records } = i;
  const count = (verdict: CallRecord["verdict"]): number => records.filter((r) => r.verdict === verdict).length;
  const out: InvariantResult[] = [];
  let alive = i.death === undefined && world.daemon.process.pid === i.pid;
  let serving = "not asked";
  if (alive) {
    try {
      process.kill(i.pid, 0);
      serving = await healthStatus(world.daemon);
    } catch (e: unknown) {
      alive = false;
      serving = String(e);
    }
  }
  out.push(check("daemon alive, same pid, SERVING", alive && serving === "SERVING", i.death ?? `pid ${i.pid}, health ${serving}`));
  out.push(check("0 wrong outputs", count("wrong-output") === 0, `${count("wrong-output")} of ${records.length} calls`));
  out.push(check("0 lost results", count("lost") === 0, `${count("lost")} of ${records.length} calls`));
  out.push(check("0 unexpected statuses or outcomes", count("unexpected") === 0, `${count("unexpected")} of ${records.length} calls`));
  const ran = new Set(records.map((r) => r.kind));
  const missing = KINDS.filter((k) => !ran.has(k.name)).map((k) => k.name);
  out.push(
    check(
      "every kind of call ran",
      missing.length === 0,
      missing.length === 0 ? `${KINDS.length} kinds` : `never ran: ${missing.join(", ")}`,
    ),
  );
  if (i.end) out.push(...resourcesSettled(i.baseline, i.end));
  else out.push(check("fds and threads back to baseline", false, "the daemon could not be read after the soak"));
  const drift = rssDriftMiB(i.samples.map((s) => s.rssMiB));
  out.push(
    check(
      "RSS drift over the second half bounded",
      drift <= RSS_DRIFT_LIMIT_MIB,
      `${drift >= 0 ? "+" : ""}${drift.toFixed(1)} MiB (limit ${RSS_DRIFT_LIMIT_MIB}) over ${i.samples.length} samples`,
    ),
  );
  const tmpLeft = await filesUnder(world.paths.tmp).catch((e: unknown) => [`unreadable: ${String(e)}`]);
  const cacheTemps = (await filesUnder(path.join(world.daemon.dir, "cache")).catch(() => [])).filter((f) => f.endsWith(".tmp"));
  const leftovers = [...tmpLeft.map((f) => `TMPDIR/${f}`), ...cacheTemps.map((f) => `cache/${f}`)];
  out.push(
    check(
      "no files left in the daemon's temp dirs",
      leftovers.length === 0,
      leftovers.length === 0 ? "TMPDIR empty, no cache temp files" : leftovers.slice(0, 5).join(", "),
    ),
  );
  const sentinelAfter = await sentinelHash(world.paths);
  out.push(
    check(
      "everything outside the writable mounts unchanged",
      sentinelAfter === i.sentinelBefore,
      `sentinel hash ${i.sentinelBefore.slice(0, 12)} → ${sentinelAfter.slice(0, 12)}`,
    ),
  );
  const logProblems = await sharedLogProblems(path.join(world.paths.shared, "log.txt"), i.appends);
  const appendedLines = i.appends.reduce((n, a) => n + a.lines, 0);
  out.push(
    check(
      "shared log: every appended line whole, exactly once",
      logProblems.length === 0,
      logProblems.length === 0 ? `${appendedLines} lines from ${i.appends.length} runs` : logProblems.slice(0, 3).join("; "),
    ),
  );
  const errors = world.daemon
    .logs()
    .split("\n")
    .filter((l) => l.includes('"level":"error"'));
  out.push(
    check(
      "the daemon logged no errors",
      errors.length === 0,
      errors.length === 0 ? "none" : `${errors.length}, first: ${errors[0]!.slice(0, 300)}`,
    ),
  );
  return out;
}
