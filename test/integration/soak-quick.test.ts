/**
 * Runs `npm run soak -- --quick` (the real harness, a real daemon child process, ~30 s) and requires
 * every invariant to hold: a daemon that crashes, leaks descriptors or threads, loses or garbles a
 * result, or answers a hostile call with an unexpected status fails CI here.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KINDS } from "../../soak/kinds.js";
import type { SoakResults } from "../../soak/report.js";

const SOAK_BIN = fileURLToPath(new URL("../../soak/run.js", import.meta.url));
/** The mix CI replays; override with SOAK_SEED to try another. */
const CI_SEED = process.env["SOAK_SEED"] ?? "20261";
/** A --quick soak takes ~30 s; a loaded shared machine may stretch its compile and drain. */
const QUICK_SOAK_TIMEOUT_MS = 240_000;

function runSoak(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SOAK_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("soak (--quick) against a real daemon", function () {
  this.timeout(QUICK_SOAK_TIMEOUT_MS);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "sandboxd-soak-test-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("every invariant holds after every kind of call: exit 0, results.json and the table", async () => {
    const out = path.join(dir, "results.json");
    const run = await runSoak(["--quick", "--seed", CI_SEED, "--out", out]);
    const report = `${run.stdout}\n--- stderr (tail) ---\n${run.stderr.slice(-6000)}`;
    expect(run.code, report).to.equal(0);
    const results = JSON.parse(await readFile(out, "utf8")) as SoakResults;
    expect(results.mode).to.equal("quick");
    expect(results.seed).to.equal(Number(CI_SEED));
    expect(results.daemonDeath, report).to.equal(undefined);
    expect(
      results.invariants.filter((i) => !i.ok),
      report,
    ).to.deep.equal([]);
    expect(results.kinds.map((k) => k.kind)).to.deep.equal(KINDS.map((k) => k.name));
    for (const k of results.kinds) expect(k.calls, k.kind).to.be.greaterThan(0);
    expect(results.totals.calls).to.equal(results.totals.ok);
    expect(run.stdout).to.include("| kind | calls | outcomes | ok | wrong output | unexpected | lost | p50 ms | p99 ms |");
    expect(run.stdout).to.include("| open fds |");
  });

  it("refuses bad flags with usage and exit 2, before starting anything", async () => {
    const run = await runSoak(["--duration", "soon"]);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.include("--duration takes e.g. 90s");
    expect(run.stderr).to.include("usage: npm run soak");
  });
});
