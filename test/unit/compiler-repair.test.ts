/**
 * The repair's planning (which suggestions a round applies, and where) and its loop (rounds, cycles,
 * the time budget, cancellation), as pure logic: the candidate compiler is a stand-in here. The
 * same behaviour against real rustc is in test/integration/repair.test.ts.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { MAX_REPAIR_ROUNDS, REPAIR_TIME_BUDGET_MS } from "../../src/limits.js";
import { REPAIR_CASES } from "../fixtures/repair/cases.js";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import type { CompileResult } from "../../src/compiler/compiler.js";
import type { Applicability, Diagnostic, Span } from "../../src/compiler/diagnostics.js";
import { applyRepairEdits, planRepairEdits, repairSource, type RepairStop } from "../../src/compiler/repair.js";

/** A suggestion span at 1-based line/column (end exclusive). */
function at(line: number, column: number, endColumn: number, replacement: string, applicability: Applicability, endLine = line): Span {
  return {
    lineStart: line,
    columnStart: column,
    lineEnd: endLine,
    columnEnd: endColumn,
    primary: true,
    label: "",
    suggestedReplacement: replacement,
    applicability,
  };
}

function help(message: string, ...spans: Span[]): Diagnostic {
  return { severity: "help", code: "", message, spans, rendered: "", children: [], explanation: "" };
}

function error(message: string, ...children: Diagnostic[]): Diagnostic {
  return { severity: "error", code: "E0000", message, spans: [], rendered: "", children, explanation: "" };
}

function warning(message: string, ...children: Diagnostic[]): Diagnostic {
  return { ...error(message, ...children), severity: "warning", code: "unused_mut" };
}

function repaired(source: string, diagnostics: Diagnostic[], maybeIncorrect = true): string {
  return applyRepairEdits(source, planRepairEdits(source, diagnostics, maybeIncorrect));
}

function failed(...diagnostics: Diagnostic[]): CompileResult {
  return { ok: false, moduleId: "", cacheHit: false, diagnostics, fixedSource: "" };
}

function compiled(moduleId: string, cacheHit = false): CompileResult {
  return { ok: true, moduleId, cacheHit, diagnostics: [], fixedSource: "" };
}

describe("repair: planning one round", function () {
  const SOURCE = 'fn main() {\n    let x = 5\n    println!("{}", x);\n}\n';

  it("applies a MachineApplicable fix of an error", function () {
    expect(repaired(SOURCE, [error("expected `;`", help("add `;` here", at(2, 14, 14, ";", "machine_applicable")))])).to.equal(
      SOURCE.replace("= 5", "= 5;"),
    );
  });

  it("applies a MaybeIncorrect suggestion with one candidate, and only when asked to", function () {
    const d = [
      error("undeclared", help("consider importing this struct", at(1, 1, 1, "use std::collections::HashMap;\n\n", "maybe_incorrect"))),
    ];
    expect(repaired(SOURCE, d)).to.equal(`use std::collections::HashMap;\n\n${SOURCE}`);
    expect(planRepairEdits(SOURCE, d, false)).to.deep.equal([]);
  });

  it("leaves a MaybeIncorrect suggestion with several candidates at one place to the agent", function () {
    const d = [
      error(
        "cannot find type `Ordering`",
        help(
          "consider importing one of these items",
          at(1, 1, 1, "use std::cmp::Ordering;\n", "maybe_incorrect"),
          at(1, 1, 1, "use std::sync::atomic::Ordering;\n", "maybe_incorrect"),
        ),
      ),
    ];
    expect(planRepairEdits(SOURCE, d, true)).to.deep.equal([]);
  });

  it("leaves alone an error whose MaybeIncorrect suggestions come from two help children (two candidates)", function () {
    const d = [
      error(
        "mismatched types",
        help("consider borrowing", at(3, 20, 21, "&x", "maybe_incorrect")),
        help("consider cloning", at(3, 21, 21, ".clone()", "maybe_incorrect")),
      ),
    ];
    expect(planRepairEdits(SOURCE, d, true)).to.deep.equal([]);
  });

  it("takes a multipart MaybeIncorrect suggestion (several places, one candidate) whole", function () {
    const d = [error("e", help("wrap it", at(2, 13, 13, "(", "maybe_incorrect"), at(2, 14, 14, ")", "maybe_incorrect")))];
    expect(repaired(SOURCE, d)).to.equal(SOURCE.replace("= 5", "= (5)"));
  });

  it("prefers an error's MachineApplicable fix to its MaybeIncorrect alternative", function () {
    const d = [error("e", help("a", at(2, 14, 14, ";", "machine_applicable")), help("b", at(2, 13, 14, "6", "maybe_incorrect")))];
    expect(repaired(SOURCE, d)).to.equal(SOURCE.replace("= 5", "= 5;"));
  });

  it("never applies a warning's suggestion, a placeholder or an unrated one", function () {
    const d = [
      warning("unused mut", help("remove", at(2, 5, 8, "", "machine_applicable"))),
      error("e1", help("fill in", at(2, 13, 14, "(...)", "has_placeholders"))),
      error("e2", help("unrated", at(2, 13, 14, "7", "unknown"))),
    ];
    expect(planRepairEdits(SOURCE, d, true)).to.deep.equal([]);
  });

  it("applies one edit two errors both ask for once (two uses of one missing import)", function () {
    const imp = (): Diagnostic =>
      error("undeclared `Rc`", help("consider importing", at(1, 1, 1, "use std::rc::Rc;\n", "maybe_incorrect")));
    expect(repaired(SOURCE, [imp(), imp()])).to.equal(`use std::rc::Rc;\n${SOURCE}`);
  });

  it("leaves an edit overlapping an earlier one for a later round", function () {
    const d = [
      error("e1", help("a", at(2, 13, 14, "6", "machine_applicable"))),
      error("e2", help("b", at(2, 13, 14, "7", "machine_applicable"))),
    ];
    expect(repaired(SOURCE, d)).to.equal(SOURCE.replace("= 5", "= 6"));
  });

  it("a deletion (empty replacement) across a line end", function () {
    const d = [error("e", help("remove this", at(2, 14, 5, "", "machine_applicable", 3)))];
    expect(repaired(SOURCE, d)).to.equal('fn main() {\n    let x = 5println!("{}", x);\n}\n');
  });

  it("regression: columns count characters, not UTF-16 units or bytes (non-ASCII and astral text before the edit)", function () {
    const source = 'fn main() { let s = "é🎉"; f(s) }\n';
    // rustc's column of `s` in `f(s)`: characters, with é and 🎉 one each
    const column = [...source.slice(0, source.indexOf("f(s)") + 2)].length + 1;
    const d = [error("mismatched", help("consider borrowing here", at(1, column, column + 1, "&s", "machine_applicable")))];
    expect(repaired(source, d)).to.equal('fn main() { let s = "é🎉"; f(&s) }\n');
  });

  it("regression: rustc counts columns after a byte-order mark, which it drops", function () {
    const source = "\uFEFFfn main() { let x = 5 }\n";
    const d = [error("e", help("a", at(1, 21, 22, "6", "machine_applicable")))]; // `5` is column 21 (checked with rustc 1.63)
    expect(repaired(source, d)).to.equal("\uFEFFfn main() { let x = 6 }\n");
  });

  it("regression: hostile: a 1 MiB line with thousands of suggestions on it plans in a few seconds at most, not minutes", function () {
    for (const filler of ["x", "🎉"]) {
      const line = filler.repeat(512 * 1024);
      const source = `${line}\n`;
      const length = [...line].length;
      const d = Array.from({ length: 4000 }, (_, i) =>
        error(`e${i}`, help("h", at(1, length - i, length - i + 1, "y", "machine_applicable"))),
      );
      const started = performance.now();
      const planned = planRepairEdits(source, d, true);
      // the character-by-character walk this replaced took 103 s for the plain line
      expect(performance.now() - started, filler).to.be.below(3_000);
      expect(planned).to.have.length(4000);
    }
  });

  it("a span outside the source is not applied, nor the rest of its fix", function () {
    const d = [
      error("e", help("a", at(2, 14, 14, ";", "machine_applicable"), at(99, 1, 1, "x", "machine_applicable"))),
      error("f", help("b", at(2, 1, 200, "", "machine_applicable"))),
    ];
    expect(planRepairEdits(SOURCE, d, true)).to.deep.equal([]);
  });
});

describe("repair: the loop", function () {
  const stops: RepairStop[] = [];
  const onStop = (why: RepairStop): void => void stops.push(why);
  beforeEach(() => (stops.length = 0));
  const addSemicolon = error("expected `;`", help("add `;` here", at(1, 2, 2, ";", "machine_applicable")));

  it("follows a suggestion that leads to a different error in round two, and records each round's edits", async function () {
    const seen: string[] = [];
    const compile = async (source: string): Promise<CompileResult> => {
      seen.push(source);
      if (source === "a;") return failed(error("needs mut", help("make it mutable", at(1, 1, 1, "mut ", "machine_applicable"))));
      return source === "mut a;" ? compiled("id", true) : failed();
    };
    const r = await repairSource("a", failed(addSemicolon), compile, undefined, { onStop });
    expect(seen).to.deep.equal(["a;", "mut a;"]);
    expect(r).to.include({ source: "mut a;", moduleId: "id", rounds: 2, cacheHit: false });
    expect(r!.edits.map((e) => [e.round, e.span.suggestedReplacement, e.message, e.suggestion])).to.deep.equal([
      [1, ";", "expected `;`", "add `;` here"],
      [2, "mut ", "needs mut", "make it mutable"],
    ]);
  });

  it("cache_hit only when every round's compile was a cache hit", async function () {
    const r = await repairSource("a", failed(addSemicolon), async () => compiled("id", true), undefined);
    expect(r?.cacheHit).to.equal(true);
  });

  it("gives no repair when no suggestion is usable, without compiling anything", async function () {
    let compiles = 0;
    const r = await repairSource("a", failed(error("use after move")), async () => (compiles++, compiled("id")), undefined, { onStop });
    expect(r).to.equal(undefined);
    expect(compiles).to.equal(0);
    expect(stops).to.deep.equal(["no_suggestion"]);
  });

  it("gives no repair for a source that compiled", async function () {
    expect(await repairSource("a", compiled("id"), async () => compiled("id"), undefined)).to.equal(undefined);
  });

  it("stops a cycle: a candidate seen before is not compiled again", async function () {
    // "a" → "b" → "a" would loop until the rounds ran out
    const toB = error("e", help("x", at(1, 1, 2, "b", "machine_applicable")));
    const toA = error("e", help("x", at(1, 1, 2, "a", "machine_applicable")));
    const compiled_: string[] = [];
    const r = await repairSource("a", failed(toB), async (s) => (compiled_.push(s), failed(s === "b" ? toA : toB)), undefined, { onStop });
    expect(r).to.equal(undefined);
    expect(compiled_).to.deep.equal(["b"]);
    expect(stops).to.deep.equal(["cycle"]);
  });

  it("stops after maxRounds compiles", async function () {
    let n = 0;
    const grow = (): CompileResult => failed(error("e", help("x", at(1, 1, 1, "x", "machine_applicable"))));
    const r = await repairSource("a", grow(), async () => (n++, grow()), undefined, { maxRounds: 3, onStop });
    expect(r).to.equal(undefined);
    expect(n).to.equal(3);
    expect(stops).to.deep.equal(["rounds"]);
  });

  it("regression: the time budget stops a pathological case and cancels the compile in flight", async function () {
    let aborted = false;
    const slow = (_: string, signal: AbortSignal): Promise<CompileResult> =>
      new Promise((_resolve, reject) =>
        signal.addEventListener("abort", () => {
          aborted = true;
          reject(new SandboxError("CANCELLED", "compile cancelled"));
        }),
      );
    const started = Date.now();
    const r = await repairSource("a", failed(addSemicolon), slow, undefined, { budgetMs: 50, onStop });
    expect(r).to.equal(undefined);
    expect(aborted).to.equal(true);
    expect(Date.now() - started).to.be.below(1_000);
    expect(stops).to.deep.equal(["budget"]);
  });

  it("a caller's cancellation rejects (CANCELLED), it is not an absent repair", async function () {
    const controller = new AbortController();
    const compile = (_: string, signal: AbortSignal): Promise<CompileResult> =>
      new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(new SandboxError("CANCELLED", "compile cancelled"))));
    const pending = repairSource("a", failed(addSemicolon), compile, controller.signal);
    controller.abort(new SandboxError("CANCELLED", "cancelled by the client"));
    const e = await pending.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).to.be.instanceOf(SandboxError).with.property("reason", "CANCELLED");
  });

  it("a candidate refused for its own sake (COMPILE_TIMEOUT, blocked, ...) ends the repair, not the request", async function () {
    for (const reason of ["COMPILE_TIMEOUT", "COMPILE_QUEUE_FULL", "MODULE_BLOCKED", "EMPTY_SOURCE"] as const) {
      const r = await repairSource("a", failed(addSemicolon), () => Promise.reject(new SandboxError(reason, "no")), undefined, { onStop });
      expect(r, reason).to.equal(undefined);
    }
    expect(stops).to.deep.equal(["compile_refused", "compile_refused", "compile_refused", "compile_refused"]);
  });

  it("an internal failure while compiling a candidate is not hidden", async function () {
    const e = await repairSource("a", failed(addSemicolon), () => Promise.reject(new SandboxError("INTERNAL", "boom")), undefined).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).to.be.instanceOf(SandboxError).with.property("reason", "INTERNAL");
  });

  it("a candidate beyond the source size limit is not compiled", async function () {
    const huge = error("e", help("x", at(1, 1, 1, "x".repeat(1024 * 1024 + 1), "machine_applicable")));
    let compiles = 0;
    const r = await repairSource("a", failed(huge), async () => (compiles++, compiled("id")), undefined, { onStop });
    expect(r).to.equal(undefined);
    expect(compiles).to.equal(0);
    expect(stops).to.deep.equal(["too_large"]);
  });
});

describe("repair: README", function () {
  const readme = readFileSync(fileURLToPath(new URL("../../../README.md", import.meta.url)), "utf8").replace(/\s+/g, " ");

  it("states the bounds the limits set", function () {
    expect(readme).to.contain(`for at most ${MAX_REPAIR_ROUNDS} rounds and ${REPAIR_TIME_BUDGET_MS / 1000} s together`);
  });

  it("states the table's figures: how many scripts each kind of suggestion repairs", function () {
    const count = (needs: string): number => REPAIR_CASES.filter((c) => c.needs === needs).length;
    const machine = count("machine_applicable");
    const withMaybe = machine + count("maybe_incorrect");
    expect(readme).to.contain(`on the ${REPAIR_CASES.length} broken scripts`);
    expect(readme).to.contain(
      `\`MACHINE_APPLICABLE\` suggestions alone repair ${machine}, with single-candidate \`MAYBE_INCORRECT\` ones ${withMaybe}.`,
    );
    for (const c of REPAIR_CASES) expect(c.repaired === undefined, c.name).to.equal(c.needs === "none");
  });
});
