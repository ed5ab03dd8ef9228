/**
 * Keeps `npm run bench` working: runs the real harness in --quick mode against a
 * real daemon and checks results.json has every figure of issue 6 with N and
 * percentiles. No timing assertions: figures from --quick are meaningless.
 */
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { BenchResults } from "../../bench/results.js";

const run = promisify(execFile);
const BENCH_BIN = fileURLToPath(new URL("../../bench/run.js", import.meta.url));

/** Figures every run must report (jco may be n/a where it is not installed, but must still be listed). */
const REQUIRED_FIGURES = [
  "execute.latency",
  "execute.throughput.c1",
  "execute.throughput.c8",
  "execute.throughput.c32",
  "floor.health",
  "floor.health.throughput.c32",
  "ratio.execute-throughput-vs-floor.health.throughput.c32",
  "floor.v8",
  "peer.node-wasi",
  "peer.jco",
  "ratio.execute-vs-floor.health",
  "ratio.execute-vs-floor.v8",
  "ratio.execute-vs-peer.node-wasi",
  "ratio.execute-vs-peer.jco",
  "cpu.sandboxd",
  "cpu.sandboxd-guest",
  "cpu.v8",
  "ratio.cpu",
  "ratio.cpu-guest",
  "compile.cold.hello",
  "compile.rustc.hello",
  "ratio.compile.hello",
  "compile.cache-hit",
  "ratio.compile.cache-hit-vs-floor.health",
  "stream.ttfb",
  "stream.throughput",
  "start.serving",
  "floor.node-start",
  "ratio.start-vs-floor.node-start",
  "rss.idle",
  "rss.after-n",
  "rss.drift",
];

describe("bench harness (--quick)", function () {
  this.timeout(300_000);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "sandboxd-bench-test-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes results.json with every figure, its N and percentiles, and prints the table", async () => {
    const out = path.join(dir, "results.json");
    const { stdout } = await run(process.execPath, [BENCH_BIN, "--quick", "--out", out], { maxBuffer: 16 * 1024 * 1024 });
    const results = JSON.parse(await readFile(out, "utf8")) as BenchResults;
    expect(results.mode).to.equal("quick");
    expect(results.node).to.equal(process.version);
    expect(results.rustc).to.match(/^rustc \d+\.\d+/);
    expect(results.machine.cores).to.be.greaterThan(0);
    expect(Date.parse(results.date)).to.not.be.NaN;
    const byId = new Map(results.figures.map((f) => [f.id, f]));
    for (const id of REQUIRED_FIGURES) {
      const figure = byId.get(id);
      expect(figure, id).to.not.equal(undefined);
      if (id === "peer.jco" || id === "ratio.execute-vs-peer.jco") {
        // Allowed to be n/a, but then it must say why.
        if (figure!.value === undefined) expect(figure!.na, id).to.be.a("string").and.not.equal("");
        continue;
      }
      expect(figure!.na, `${id} should be measured`).to.equal(undefined);
      expect(figure!.value, id).to.be.a("number").and.satisfy(Number.isFinite);
      if (figure!.summary) {
        expect(figure!.summary.n, id).to.be.greaterThan(0);
        expect(figure!.summary.p50, id).to.be.at.most(figure!.summary.p90);
        expect(figure!.summary.p90, id).to.be.at.most(figure!.summary.p99);
      }
    }
    expect(stdout).to.include("| § | figure | N | p50 / value | p90 | p99 |");
    expect(stdout).to.include("Execute cached hello");
  });
});
