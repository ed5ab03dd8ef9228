import { readFileSync } from "node:fs";
import { expect } from "chai";
import {
  asExplained,
  flattenDiagnostics,
  hasErrors,
  limitDiagnostics,
  parseRustcDiagnostics,
  type Diagnostic,
} from "../../src/compiler/diagnostics.js";

// Captured from Debian rustc 1.63: `rustc --error-format=json --edition 2021 --target wasm32-wasi
// --crate-type bin -O -C strip=symbols X.rs 2> X.stderr.txt` run inside test/fixtures/compiler.
const FIXTURES = new URL("../../../test/fixtures/compiler/", import.meta.url);

function fixture(name: string, suffix = "stderr.txt"): string {
  return readFileSync(new URL(`${name}.${suffix}`, FIXTURES), "utf8");
}

describe("parseRustcDiagnostics", () => {
  it("maps a type mismatch (E0308) with both its spans and drops the closing summaries", () => {
    const ds = parseRustcDiagnostics(fixture("e0308"), { userFile: "e0308.rs", lineOffset: 0 });
    expect(ds).to.have.length(1);
    const [d] = ds;
    expect(d?.severity).to.equal("error");
    expect(d?.code).to.equal("E0308");
    expect(d?.message).to.equal("mismatched types");
    expect(d?.spans).to.deep.equal([
      {
        lineStart: 2,
        columnStart: 18,
        lineEnd: 2,
        columnEnd: 25,
        primary: true,
        label: "expected `i32`, found `&str`",
        suggestedReplacement: "",
        applicability: "none",
      },
      {
        lineStart: 2,
        columnStart: 12,
        lineEnd: 2,
        columnEnd: 15,
        primary: false,
        label: "expected due to this",
        suggestedReplacement: "",
        applicability: "none",
      },
    ]);
    expect(d?.rendered).to.contain("error[E0308]: mismatched types").and.contain("e0308.rs:2:18");
    expect(hasErrors(ds)).to.equal(true);
  });

  it("keeps the help child's suggestion for an unresolved name (E0425)", () => {
    const [d, ...rest] = parseRustcDiagnostics(fixture("e0425"), { userFile: "e0425.rs", lineOffset: 0 });
    expect(rest).to.be.empty;
    expect(d?.code).to.equal("E0425");
    expect(d?.spans[0]).to.include({ lineStart: 3, columnStart: 20, columnEnd: 24, primary: true });
    expect(d?.children).to.have.length(1);
    const help = d?.children[0];
    expect(help?.severity).to.equal("help");
    expect(help?.message).to.equal("a local variable with a similar name exists");
    expect(help?.spans[0]?.suggestedReplacement).to.equal("total");
    expect(help?.rendered).to.equal("");
  });

  it("keeps all three labelled spans of a borrow error (E0502), including the one inside println!", () => {
    const [d] = parseRustcDiagnostics(fixture("e0502"), { userFile: "e0502.rs", lineOffset: 0 });
    expect(d?.code).to.equal("E0502");
    expect(d?.spans.map((s) => [s.lineStart, s.columnStart, s.primary, s.label])).to.deep.equal([
      [4, 5, true, "mutable borrow occurs here"],
      [3, 18, false, "immutable borrow occurs here"],
      [5, 20, false, "immutable borrow later used here"],
    ]);
  });

  it("carries the machine-applicable `;` suggestion of a missing semicolon", () => {
    const [d, ...rest] = parseRustcDiagnostics(fixture("missing-semicolon"), { userFile: "missing-semicolon.rs", lineOffset: 0 });
    expect(rest).to.be.empty;
    expect(d?.code).to.equal("");
    expect(d?.message).to.equal("expected `;`, found keyword `let`");
    expect(d?.spans.find((s) => s.primary)).to.include({ lineStart: 2, columnStart: 14, lineEnd: 2, columnEnd: 14 });
    expect(d?.children[0]?.spans[0]).to.deep.include({ lineStart: 2, columnStart: 14, suggestedReplacement: ";" });
  });

  it("returns a warning-only compile as one warning and no errors", () => {
    const ds = parseRustcDiagnostics(fixture("warning-only"), { userFile: "warning-only.rs", lineOffset: 0 });
    expect(ds).to.have.length(1);
    expect(ds[0]?.severity).to.equal("warning");
    expect(ds[0]?.code).to.equal("unused_variables");
    expect(ds[0]?.children.map((c) => c.severity)).to.deep.equal(["note", "help"]);
    expect(ds[0]?.children[1]?.spans[0]?.suggestedReplacement).to.equal("_unused");
    expect(hasErrors(ds)).to.equal(false);
  });

  it("shifts spans and the rendered text up by the prelude and shows the display name", () => {
    const ds = parseRustcDiagnostics(fixture("prelude-e0308"), { userFile: "prelude-e0308.rs", lineOffset: 2, displayName: "main.rs" });
    // the unused-import warning lies wholly in the prelude: it is about the daemon's code, not the user's
    expect(ds.map((x) => x.code)).to.deep.equal(["E0308"]);
    const [d] = ds;
    expect(d?.spans[0]).to.include({ lineStart: 2, columnStart: 18, primary: true });
    expect(d?.rendered).to.contain("--> main.rs:2:18").and.not.contain("prelude-e0308.rs");
    expect(d?.rendered).to.match(/^2 \|\s+let x: i32 = "hello";$/m);
  });

  it("drops spans in the prelude and in files other than the user's (std sources)", () => {
    const ds = parseRustcDiagnostics(fixture("foreign-span"), { userFile: "foreign-span.rs", lineOffset: 2 });
    expect(ds.map((d) => d.code)).to.deep.equal(["E0308", "E0277", "E0061"]);
    const note = ds[0]?.children[0];
    expect(note?.message).to.equal("associated function defined here");
    expect(note?.spans).to.be.empty;
    expect(ds[2]?.children[1]?.spans[0]).to.include({ lineStart: 2, suggestedReplacement: "String::from(1u8)" });

    const inPrelude = parseRustcDiagnostics(fixture("foreign-span"), { userFile: "foreign-span.rs", lineOffset: 3 });
    // line 3 is now prelude, so the E0308 there is the daemon's business and disappears
    expect(inPrelude.map((d) => d.code)).to.deep.equal(["E0277", "E0061"]);
    expect(inPrelude[0]?.spans[0]).to.include({ lineStart: 1, columnStart: 13 });
  });

  it("matches the user file by resolved path and ignores everything that is not rustc JSON", () => {
    const stderr = ["warning: something printed by a wrapper", "{not json", fixture("e0308"), '{"unrelated":true}'].join("\n");
    const ds = parseRustcDiagnostics(stderr, { userFile: "./e0308.rs", lineOffset: 0 });
    expect(ds).to.have.length(1);
    expect(ds[0]?.spans).to.have.length(2);
    expect(parseRustcDiagnostics("", { userFile: "x.rs", lineOffset: 0 })).to.deep.equal([]);
  });

  it("maps a span in a foreign macro to its call site in the user's file, without the foreign suggestion", () => {
    const line = JSON.stringify({
      message: "boom",
      code: null,
      level: "error",
      rendered: "error: boom\n",
      children: [],
      spans: [
        {
          file_name: "<std macros>",
          line_start: 1,
          line_end: 1,
          column_start: 1,
          column_end: 5,
          is_primary: true,
          label: "here",
          suggested_replacement: "x",
          expansion: { span: { file_name: "main.rs", line_start: 7, line_end: 7, column_start: 3, column_end: 9 } },
        },
      ],
    });
    const [d] = parseRustcDiagnostics(line, { userFile: "main.rs", lineOffset: 0 });
    expect(d?.spans).to.deep.equal([
      {
        lineStart: 7,
        columnStart: 3,
        lineEnd: 7,
        columnEnd: 9,
        primary: true,
        label: "here",
        suggestedReplacement: "",
        applicability: "none",
      },
    ]);
  });

  it("rates each suggestion as rustc does: `;` machine-applicable, a similar name maybe-incorrect, an extra argument with placeholders", () => {
    const semicolon = parseRustcDiagnostics(fixture("missing-semicolon"), { userFile: "missing-semicolon.rs", lineOffset: 0 })[0];
    expect(semicolon?.children[0]?.spans[0]).to.include({ suggestedReplacement: ";", applicability: "machine_applicable" });
    expect(semicolon?.spans.every((s) => s.applicability === "none")).to.equal(true);
    const similar = parseRustcDiagnostics(fixture("e0425"), { userFile: "e0425.rs", lineOffset: 0 })[0];
    expect(similar?.children[0]?.spans[0]).to.include({ suggestedReplacement: "total", applicability: "maybe_incorrect" });
    const extra = parseRustcDiagnostics(fixture("foreign-span"), { userFile: "foreign-span.rs", lineOffset: 2 })[2];
    expect(extra?.children[1]?.spans[0]).to.include({ applicability: "has_placeholders" });
    // a deletion has an empty replacement: only its applicability says there is a suggestion
    const removal = parseRustcDiagnostics(fixture("fixes"), { userFile: "fixes.rs", lineOffset: 0 })[0];
    expect(removal?.children[1]?.spans[0]).to.include({ suggestedReplacement: "", applicability: "machine_applicable" });
  });

  it("a suggestion rustc did not rate is `unknown`, one it rated in a way we do not know too", () => {
    const line = (applicability: unknown): string =>
      JSON.stringify({
        message: "m",
        code: null,
        level: "error",
        rendered: "",
        spans: [],
        children: [
          {
            message: "help",
            code: null,
            level: "help",
            children: [],
            spans: [
              {
                file_name: "main.rs",
                line_start: 1,
                line_end: 1,
                column_start: 1,
                column_end: 2,
                is_primary: true,
                suggested_replacement: "x",
                suggestion_applicability: applicability,
              },
            ],
          },
        ],
      });
    for (const rating of ["Unspecified", null, "SomethingNew"]) {
      expect(parseRustcDiagnostics(line(rating), { userFile: "main.rs", lineOffset: 0 })[0]?.children[0]?.spans[0]?.applicability).to.equal(
        "unknown",
      );
    }
  });

  it("an error code carries exactly the text `rustc --explain` prints for it; lints and children carry none", () => {
    const [e0308] = parseRustcDiagnostics(fixture("e0308"), { userFile: "e0308.rs", lineOffset: 0 });
    expect(e0308?.explanation).to.equal(fixture("e0308", "explain.txt"));
    // E0425's entry has doc-test-only `# ` lines, which rustc --explain leaves out
    const [e0425] = parseRustcDiagnostics(fixture("e0425"), { userFile: "e0425.rs", lineOffset: 0 });
    expect(e0425?.explanation).to.equal(fixture("e0425", "explain.txt"));
    expect(e0425?.children.every((c) => c.explanation === "")).to.equal(true);
    const [lint] = parseRustcDiagnostics(fixture("warning-only"), { userFile: "warning-only.rs", lineOffset: 0 });
    expect(lint).to.include({ code: "unused_variables", explanation: "" });
  });

  it("explains like rustc --explain: fence info cut, hidden lines only inside code blocks dropped, indentation kept", () => {
    const entry = "Text.\n\n# not hidden outside code\n\n  ```compile_fail,E0001\n  # hidden\n  shown\n  ```\n";
    expect(asExplained(entry)).to.equal("Text.\n\n# not hidden outside code\n\n  ```\n  shown\n  ```\n");
  });

  it("limits diagnostics to a byte budget, keeping errors over warnings in their order and counting the rest", () => {
    const d = (severity: Diagnostic["severity"], message: string): Diagnostic => ({
      severity,
      code: "",
      message,
      spans: [],
      rendered: "x".repeat(100),
      children: [],
      explanation: "",
    });
    const all = [d("warning", "w1"), d("error", "e1"), d("warning", "w2"), d("error", "e2"), d("warning", "w3")];
    expect(limitDiagnostics(all, 1_000_000)).to.deep.equal(all);
    const size = Buffer.byteLength(JSON.stringify(all[0]));
    const kept = limitDiagnostics(all, 3 * size + 5);
    expect(kept.map((x) => x.message).slice(0, 3)).to.deep.equal(["w1", "e1", "e2"]);
    expect(kept[3]).to.include({ severity: "note" });
    expect(kept[3]?.message).to.contain("2 more diagnostics (0 of them errors) were left out");
    expect(limitDiagnostics(all, size).map((x) => x.message)[0]).to.equal("e1");
  });

  it("flattens children after their parent for the wire format", () => {
    const ds = parseRustcDiagnostics(fixture("warning-only"), { userFile: "warning-only.rs", lineOffset: 0 });
    const flat = flattenDiagnostics(ds);
    expect(flat.map((d) => d.severity)).to.deep.equal(["warning", "note", "help"]);
    expect(flat.every((d) => d.children.length === 0)).to.equal(true);
  });
});
