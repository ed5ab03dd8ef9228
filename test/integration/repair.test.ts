/**
 * Verified repair against a real daemon and real rustc: the table of broken scripts each gives its
 * expected repaired source (or none), the repair's module runs, a second identical request replays
 * it from the cache with no rustc, a suggestion leading to a new error is followed, and neither
 * Execute nor StreamOutput ever repairs.
 */
import { Metadata, status } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { expect } from "chai";
import { Applicability, Outcome, type CompileResponse } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { childPids, watchChildren } from "../helpers/processes.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { REPAIR_CASES, type RepairCase } from "../fixtures/repair/cases.js";

const src = (value: string, repair = true): { input: { $case: "source"; value: string }; repair: boolean } => ({
  input: { $case: "source", value },
  repair,
});

/** A comment line making a source unique, so its compiles are cold. */
const uniqueLine = (): string => `// ${randomBytes(8).toString("hex")}\n`;

function tableCase(name: string): RepairCase {
  const c = REPAIR_CASES.find((x) => x.name === name);
  if (!c) throw new Error(`no repair case ${name}`);
  return c;
}

/** Constants rustc must evaluate to its step limit in the slow repair: ~4 s of rustc on an idle machine. */
const SLOW_CONSTANTS = 8;

describe("repair: the table of broken scripts (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  for (const c of REPAIR_CASES) {
    const title = c.repaired === undefined ? `${c.name} (${c.mistake}): no repair` : `${c.name} (${c.mistake}): repaired as expected`;
    it(title, async function () {
      const plain = await daemon.compile(src(c.broken, false));
      expect(plain.ok, "the table's scripts are broken").to.equal(false);
      expect(plain.repair, "no repair unless asked for").to.equal(undefined);
      const r = await daemon.compile(src(c.broken));
      // the source as sent is described as without repair: nothing hidden
      expect(r).to.include({ ok: false, moduleId: "" });
      expect(r.diagnostics).to.deep.equal(plain.diagnostics);
      expect(r.fixedSource).to.equal(plain.fixedSource);
      if (c.repaired === undefined) {
        expect(r.repair).to.equal(undefined);
        return;
      }
      expect(r.repair?.source).to.equal(c.repaired);
      expect(r.repair!.moduleId).to.match(/^[0-9a-f]{64}$/);
      expect(r.repair!.edits).to.not.be.empty;
      const machineOnly = r.repair!.edits.every((e) => e.span?.applicability === Applicability.APPLICABILITY_MACHINE_APPLICABLE);
      expect(machineOnly ? "machine_applicable" : "maybe_incorrect").to.equal(c.needs);
      for (const e of r.repair!.edits) expect(e.message).to.not.equal("");
      // the module is the repaired source's own: compiling that source plainly is a cache hit of it
      const again = await daemon.compile(src(c.repaired, false));
      expect(again).to.include({ ok: true, cacheHit: true, moduleId: r.repair!.moduleId });
    });
  }
});

describe("repair: rounds, the module, the cache (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--log-level", "debug"] });
  });
  after(async function () {
    await daemon?.stop();
  });

  it("a suggestion that leads to a different error in round two is followed; each edit says where, in which round's source", async function () {
    const c = tableCase("semicolon_then_mut");
    const r = await daemon.compile(src(c.broken));
    expect(r.diagnostics.map((d) => d.message)).to.deep.equal(["expected `;`, found `total`"]);
    expect(r.repair).to.include({ source: c.repaired, rounds: 2, cacheHit: false });
    const edits = r.repair!.edits.map((e) => ({
      round: e.round,
      line: e.span!.lineStart,
      column: e.span!.columnStart,
      columnEnd: e.span!.columnEnd,
      text: e.span!.suggestedReplacement,
      code: e.code,
      suggestion: e.suggestion,
    }));
    expect(edits).to.deep.equal([
      { round: 1, line: 2, column: 18, columnEnd: 18, text: ";", code: "", suggestion: "add `;` here" },
      { round: 2, line: 2, column: 9, columnEnd: 14, text: "mut total", code: "E0384", suggestion: "consider making this binding mutable" },
    ]);
  });

  it("the returned module id runs at once", async function () {
    const source = uniqueLine() + tableCase("borrow").broken;
    const r = await daemon.compile(src(source));
    const run = await daemon.execute({ target: moduleTarget(r.repair!.moduleId) });
    expect(run.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(run.exitCode).to.equal(0);
    expect(run.stdout.toString()).to.equal("5\n");
  });

  it("a repair repeated is the same repair, from the cache: no rustc process, cache_hit on both", async function () {
    const source = uniqueLine() + tableCase("two_mistakes").broken;
    const pid = daemon.process.pid!;
    const first = await watchChildren(pid, () => daemon.compile(src(source)));
    expect(first.seen, "the first repair runs rustc").to.not.be.empty;
    expect(first.result.repair?.cacheHit).to.equal(false);
    const second = await watchChildren(pid, () => daemon.compile(src(source)));
    expect(second.seen, "processes spawned by the repeated repair").to.deep.equal([]);
    expect(second.result.cacheHit).to.equal(true);
    expect(second.result.repair?.cacheHit).to.equal(true);
    const { durationUs: _a, ...firstRest } = first.result;
    const { durationUs: _b, ...secondRest } = second.result;
    expect({ ...secondRest, cacheHit: false, repair: { ...secondRest.repair!, cacheHit: false } }).to.deep.equal(firstRest);
  });

  it("Execute and StreamOutput of a repairable source never repair it implicitly", async function () {
    const c = tableCase("mut_push");
    const source = uniqueLine() + c.broken;
    const executed = await daemon.execute({ target: sourceTarget(source) });
    expect(executed.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
    const streamed = await daemon.stream({ target: sourceTarget(source) });
    expect(streamed.map((e) => e.event.event?.$case)).to.deep.equal(["compiling", "finished"]);
    // had either repaired it, the repaired source would be in the cache now
    const repairedSource = source.replace("let v =", "let mut v =");
    const plain = await daemon.compile(src(repairedSource, false));
    expect(plain).to.include({ ok: true, cacheHit: false });
  });

  it("repair on a source that compiles returns no repair", async function () {
    const r = await daemon.compile(src(`${uniqueLine()}fn main() { println!("ok"); }\n`));
    expect(r.ok).to.equal(true);
    expect(r.repair).to.equal(undefined);
  });

  it("hostile: repair of an empty source is EMPTY_SOURCE, and of wasm it is ignored", async function () {
    const empty = await rejection(daemon.compile(src("   ")));
    expect(empty).to.include({ code: status.INVALID_ARGUMENT, reason: "EMPTY_SOURCE" });
    const notWasm = await rejection(daemon.compile({ input: { $case: "wasm", value: Buffer.from("\0asm") }, repair: true }));
    expect(notWasm).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
  });

  it("a client that gives up during a repair stops its rustc, and the daemon serves on", async function () {
    // Round 2 is slow: the source then type-checks, and rustc evaluates each constant up to its step limit
    // (~0.5 s each on an idle machine; one was not enough: the whole repair beat the deadline there).
    const spins = Array.from({ length: SLOW_CONSTANTS }, (_, i) => `const X${i}: u64 = spin(30_000_000 + ${i});\n`).join("");
    const sum = Array.from({ length: SLOW_CONSTANTS }, (_, i) => `X${i}`).join(" + ");
    const slow = `${uniqueLine()}const fn spin(n: u64) -> u64 { let mut i = 0; let mut a = 0; while i < n { a ^= i; i += 1; } a }\n${spins}${tableCase("semicolon_then_mut").broken.replace('println!("{}", total);', `println!("{} {}", total, ${sum});`)}`;
    // The source's own compile is cached first, so any rustc running during the call is the repair's.
    expect((await daemon.compile(src(slow, false))).ok).to.equal(false);
    const call = rejection(
      new Promise<CompileResponse>((resolve, reject) =>
        daemon.client.compile(src(slow), new Metadata(), { deadline: Date.now() + 1_500 }, (e, v) => (e ? reject(e) : resolve(v!))),
      ),
    );
    await new Promise((r) => setTimeout(r, 700));
    expect(await childPids(daemon.process.pid!), "rustc should be running for the repair").to.not.equal("");
    expect((await call).code).to.equal(status.DEADLINE_EXCEEDED);
    let left = await childPids(daemon.process.pid!);
    for (let i = 0; i < 50 && left !== ""; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = await childPids(daemon.process.pid!);
    }
    expect(left, "rustc left running after the client gave up").to.equal("");
    const ok = await daemon.compile(src(`${uniqueLine()}fn main() {}\n`));
    expect(ok.ok).to.equal(true);
  });
});
