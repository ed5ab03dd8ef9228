import { readFileSync } from "node:fs";
import { expect } from "chai";
import { rustcMessages } from "../../src/compiler/diagnostics.js";
import { applyMachineApplicableFixes } from "../../src/compiler/fixes.js";

const FIXTURES = new URL("../../../test/fixtures/compiler/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");
const LIMIT = 1024 * 1024;

/** A rustc JSON line: one error whose help children each suggest the given edits. */
function diagnostic(fixes: { start: number; end: number; text: string; applicability?: string; file?: string }[][]): string {
  return JSON.stringify({
    message: "m",
    code: null,
    level: "error",
    rendered: "",
    spans: [],
    children: fixes.map((edits) => ({
      message: "help",
      code: null,
      level: "help",
      children: [],
      rendered: null,
      spans: edits.map((e) => ({
        file_name: e.file ?? "main.rs",
        byte_start: e.start,
        byte_end: e.end,
        line_start: 1,
        line_end: 1,
        column_start: 1,
        column_end: 1,
        is_primary: true,
        suggested_replacement: e.text,
        suggestion_applicability: e.applicability ?? "MachineApplicable",
      })),
    })),
  });
}

describe("applyMachineApplicableFixes", () => {
  it("applies rustc's machine-applicable fixes at byte offsets after non-ASCII text (a removed import, a borrow)", () => {
    const fixed = applyMachineApplicableFixes(read("fixes.rs"), rustcMessages(read("fixes.stderr.txt")), "fixes.rs", LIMIT);
    expect(fixed).to.equal(read("fixes.rs").replace("use std::collections::HashMap;", "").replace("takes(greeting)", "takes(&greeting)"));
  });

  it("leaves out suggestions that are not machine-applicable, and says so with an empty result", () => {
    expect(applyMachineApplicableFixes(read("e0425.rs"), rustcMessages(read("e0425.stderr.txt")), "e0425.rs", LIMIT)).to.equal("");
    const source = "let a = 1;";
    expect(
      applyMachineApplicableFixes(
        source,
        rustcMessages(diagnostic([[{ start: 4, end: 5, text: "b", applicability: "MaybeIncorrect" }]])),
        "main.rs",
        LIMIT,
      ),
    ).to.equal("");
  });

  it("applies a fix's edits together, and leaves out a later fix that overlaps an applied one", () => {
    const source = "abcdef";
    const json = diagnostic([
      [
        { start: 0, end: 1, text: "A" },
        { start: 4, end: 5, text: "E" },
      ],
      [
        { start: 3, end: 5, text: "XX" },
        { start: 5, end: 6, text: "F" },
      ], // overlaps E: none of it goes in
      [{ start: 2, end: 2, text: "+" }],
      [{ start: 2, end: 2, text: "-" }], // a second insertion at one point has no order
      [
        { start: 0, end: 1, text: "A" },
        { start: 1, end: 2, text: "B" },
      ], // repeats an applied edit: only the new one goes in
    ]);
    expect(applyMachineApplicableFixes(source, rustcMessages(json), "main.rs", LIMIT)).to.equal("AB+cdEf");
  });

  it("a fix that reaches outside the source or the user's file is left out whole", () => {
    const source = "abc";
    const json = [
      diagnostic([
        [
          { start: 0, end: 1, text: "A" },
          { start: 2, end: 9, text: "!" },
        ],
      ]),
      diagnostic([
        [
          { start: 1, end: 2, text: "B" },
          { start: 0, end: 0, text: "x", file: "/usr/lib/rustlib/src/lib.rs" },
        ],
      ]),
      diagnostic([[{ start: 2, end: 1, text: "?" }]]),
    ].join("\n");
    expect(applyMachineApplicableFixes(source, rustcMessages(json), "main.rs", LIMIT)).to.equal("");
  });

  it("gives up rather than return a fixed source longer than the daemon would compile", () => {
    const json = diagnostic([[{ start: 0, end: 0, text: "x".repeat(20) }]]);
    expect(applyMachineApplicableFixes("abc", rustcMessages(json), "main.rs", 22)).to.equal("");
    expect(applyMachineApplicableFixes("abc", rustcMessages(json), "main.rs", 23)).to.equal(`${"x".repeat(20)}abc`);
  });
});
