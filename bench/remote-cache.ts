/**
 * §7, the shared module cache: what a Compile costs on a host that finds the module in
 * Redis (verified: record MAC, module hash, validation, then written to its disk), beside a local
 * cache hit and the cold compile it saves. Two real daemons with separate cache dirs share a real
 * redis-server on a unix socket in the run's scratch dir.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp } from "node:fs/promises";
import path from "node:path";
import { REMOTE_KEY_PREFIX } from "../src/cache/remote-cache.js";
import { startRedis, writeClusterKey } from "../test/helpers/redis.js";
import { BenchDaemon } from "./bench-daemon.js";
import type { Figure } from "./results.js";
import type { BenchContext } from "./scenarios.js";
import { summarize, timeSerial } from "./stats.js";
import { fixtureSource, uniqueSource } from "./workloads.js";

/** Section number of these figures in the table. */
const SECTION = 7;
/** The fixture compiled: a serde script, the kind whose cold compile takes seconds. */
const FIXTURE = "serde_order";
/** Longest wait for A's background upload before a sample is given up. */
const UPLOAD_WAIT_MS = 30_000;

/** Cold compile on daemon A, remote hit on daemon B, then local hits on B; pushes the figures into ctx. */
export async function measureRemoteCache(ctx: BenchContext): Promise<void> {
  const runs = ctx.sizes.remoteCacheRuns;
  ctx.log(`§7 shared cache (Redis): ${runs} × (cold Compile on A, remote-hit Compile on B, local-hit Compile on B) of ${FIXTURE}.rs`);
  const redis = await startRedis();
  const dir = await mkdtemp(path.join(ctx.dir, "remote-"));
  const daemons: BenchDaemon[] = [];
  try {
    const keyFile = await writeClusterKey(dir);
    const args = [...ctx.daemonArgs, "--remote-cache", redis.url, "--remote-cache-key", keyFile];
    for (const name of ["a", "b"]) {
      daemons.push(await BenchDaemon.start({ dir, cacheDir: path.join(dir, `cache-${name}`), args, socketName: `${name}.sock` }));
    }
    const [a, b] = daemons as [BenchDaemon, BenchDaemon];
    const base = await fixtureSource(FIXTURE);
    const cold: number[] = [];
    const remoteHit: number[] = [];
    const localHit: number[] = [];
    for (let i = 0; i < runs; i++) {
      const source = { input: { $case: "source" as const, value: uniqueSource(base, randomUUID()) } };
      let started = performance.now();
      const onA = await a.client.compile(source);
      cold.push(performance.now() - started);
      if (!onA.ok || onA.cacheHit) throw new Error(`§7: the cold Compile on A was ${onA.ok ? "a cache hit" : "a compile error"}`);
      const deadline = Date.now() + UPLOAD_WAIT_MS;
      while ((await redis.client.exists(`${REMOTE_KEY_PREFIX}rec:${onA.moduleId}`)) === 0) {
        if (Date.now() > deadline) throw new Error(`§7: A did not upload ${onA.moduleId} within ${UPLOAD_WAIT_MS} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
      started = performance.now();
      const onB = await b.client.compile(source);
      remoteHit.push(performance.now() - started);
      if (!onB.cacheHit || onB.moduleId !== onA.moduleId) throw new Error("§7: B's Compile was not a remote hit with A's module id");
      localHit.push(
        ...(await timeSerial(1, async () => {
          if (!(await b.client.compile(source)).cacheHit) throw new Error("§7: B's second Compile was not a local hit");
        })),
      );
    }
    const coldFigure: Figure = {
      id: "remote.compile.cold",
      section: SECTION,
      label: `Cold Compile ${FIXTURE}.rs on host A (rustc; upload after the response)`,
      unit: "ms",
      value: summarize(cold).p50,
      summary: summarize(cold),
    };
    const remoteFigure: Figure = {
      id: "remote.compile.remote-hit",
      section: SECTION,
      label: `Compile ${FIXTURE}.rs on host B from Redis: MAC, SHA-256, validation, write to disk`,
      unit: "ms",
      value: summarize(remoteHit).p50,
      summary: summarize(remoteHit),
    };
    const localFigure: Figure = {
      id: "remote.compile.local-hit",
      section: SECTION,
      label: `Compile ${FIXTURE}.rs on host B again: local cache hit`,
      unit: "ms",
      value: summarize(localHit).p50,
      summary: summarize(localHit),
    };
    ctx.figures.push(coldFigure, remoteFigure, localFigure, {
      id: "ratio.remote-hit-vs-cold",
      section: SECTION,
      label: "Remote-hit Compile ÷ cold Compile",
      unit: "×",
      value: (remoteFigure.value ?? NaN) / (coldFigure.value ?? NaN),
      note: "remote.compile.remote-hit p50 ÷ remote.compile.cold p50",
    });
  } finally {
    for (const d of daemons) await d.stop();
    await redis.stop();
  }
}
