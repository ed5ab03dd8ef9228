/**
 * The soak's pure parts: its command line, its seeded generator, the RSS drift
 * figure and the shared-log check (the harness itself runs in soak-quick.test.ts).
 */
import { expect } from "chai";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { rssDriftMiB, sharedLogProblems } from "../../soak/invariants.js";
import { expectedEcho, fnv1a32 } from "../../soak/kinds.js";
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_DURATION_MS,
  parseDuration,
  parseSoakArgs,
  QUICK_CONCURRENCY,
  QUICK_DURATION_MS,
} from "../../soak/options.js";
import { Rng } from "../../soak/rng.js";

describe("soak: command line, generator and checks", function () {
  it("parses --duration in ms, s, m, h and plain seconds, and refuses anything else", () => {
    expect(parseDuration("500ms")).to.equal(500);
    expect(parseDuration("90s")).to.equal(90_000);
    expect(parseDuration("10m")).to.equal(600_000);
    expect(parseDuration("1h")).to.equal(3_600_000);
    expect(parseDuration("45")).to.equal(45_000);
    for (const bad of ["", "soon", "10 minutes", "-5s", "0", "1d"]) expect(parseDuration(bad), bad).to.be.instanceOf(Error);
  });

  it("defaults to a 10-minute soak, --quick to a short one, and takes --seed, --concurrency and --out", () => {
    expect(parseSoakArgs([], "/r.json", () => 7)).to.deep.equal({
      quick: false,
      durationMs: DEFAULT_DURATION_MS,
      concurrency: DEFAULT_CONCURRENCY,
      seed: 7,
      out: "/r.json",
    });
    expect(parseSoakArgs(["--quick"], "/r.json", () => 7)).to.include({ durationMs: QUICK_DURATION_MS, concurrency: QUICK_CONCURRENCY });
    expect(parseSoakArgs(["--seed", "0", "--concurrency", "3", "--duration", "2m", "--out", "x.json"], "/r.json", () => 7)).to.deep.equal({
      quick: false,
      durationMs: 120_000,
      concurrency: 3,
      seed: 0,
      out: "x.json",
    });
    expect(String(parseSoakArgs(["--concurrency", "0"], "/r.json", () => 7))).to.match(/--concurrency takes an integer of at least 1/);
    expect(String(parseSoakArgs(["--seed", "4294967296"], "/r.json", () => 7))).to.match(/--seed takes an integer/);
    expect(String(parseSoakArgs(["--bogus"], "/r.json", () => 7))).to.match(/bogus/);
  });

  it("replays the same choices from the same seed", () => {
    const draw = (seed: number): number[] => {
      const rng = new Rng(seed);
      return [rng.int(0, 1000), rng.int(0, 1000), ...rng.bytes(5), rng.pick(["a", "b", "c"]).charCodeAt(0)];
    };
    expect(draw(42)).to.deep.equal(draw(42));
    expect(draw(42)).to.not.deep.equal(draw(43));
  });

  it("computes the guest's FNV-1a and echo output the way the Rust guest does", () => {
    expect(fnv1a32(Buffer.from(""))).to.equal(0x811c9dc5);
    expect(fnv1a32(Buffer.from("a"))).to.equal(0xe40c292c);
    expect(expectedEcho("t", Buffer.from("ab")).toString()).to.equal(`t 2 ${fnv1a32(Buffer.from("ab")).toString(16).padStart(8, "0")}\nba`);
  });

  it("measures RSS drift as the last tenth's median minus the middle tenth's", () => {
    const flat = Array.from({ length: 100 }, () => 100);
    expect(rssDriftMiB(flat)).to.equal(0);
    const growing = Array.from({ length: 100 }, (_, i) => 100 + i);
    expect(rssDriftMiB(growing)).to.equal(194 - 149);
    expect(rssDriftMiB([100])).to.equal(0);
  });

  describe("the shared log check", function () {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(path.join(tmpdir(), "sandboxd-soak-log-"));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("accepts interleaved whole lines, each exactly once", async () => {
      await writeFile(path.join(dir, "log.txt"), "a:0\nb:0\na:1\nb:1\n");
      expect(
        await sharedLogProblems(path.join(dir, "log.txt"), [
          { tag: "a", lines: 2 },
          { tag: "b", lines: 2 },
        ]),
      ).to.deep.equal([]);
    });

    it("reports a torn line, a missing line, a doubled line and a partial last line", async () => {
      await writeFile(path.join(dir, "log.txt"), "a:0\na:0\nb:a:1\n0\nb:1");
      const problems = await sharedLogProblems(path.join(dir, "log.txt"), [
        { tag: "a", lines: 2 },
        { tag: "b", lines: 2 },
      ]);
      expect(problems).to.include("the log does not end with a whole line");
      expect(problems).to.include('unexpected line "b:a:1"');
      expect(problems).to.include("a:0 appears 2 times");
      expect(problems).to.include("a:1 appears 0 times");
    });
  });
});
