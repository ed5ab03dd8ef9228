/**
 * The unified diff `sandboxctl compile --repair` prints: checked against GNU patch, which must turn
 * the old text into the new one with it, for hand-picked and generated pairs.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import fc from "fast-check";
import { unifiedDiff } from "../../src/cli/unified-diff.js";
import { tempDir } from "./policy-fixtures.js";

describe("unified diff", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  before(async () => (tmp = await tempDir("unified-diff")));
  after(async () => tmp.remove());

  /** Applies `diff` to `before` with GNU patch and returns the result. */
  function patched(before: string, diff: string): string {
    const file = path.join(tmp.path, "f.rs");
    writeFileSync(file, before);
    execFileSync("patch", ["--quiet", "--force", file], { input: diff });
    return readFileSync(file, "utf8");
  }

  it("an insertion at the top and a change further down, with three lines of context", function () {
    const before = 'fn main() {\n    let mut m = HashMap::new();\n    m.insert(1, 2)\n    println!("{:?}", m);\n}\n';
    const after = `use std::collections::HashMap;\n\n${before.replace("m.insert(1, 2)", "m.insert(1, 2);")}`;
    expect(unifiedDiff(before, after, "s.rs", "s.rs")).to.equal(
      '--- s.rs\n+++ s.rs\n@@ -1,5 +1,7 @@\n+use std::collections::HashMap;\n+\n fn main() {\n     let mut m = HashMap::new();\n-    m.insert(1, 2)\n+    m.insert(1, 2);\n     println!("{:?}", m);\n }\n',
    );
  });

  it("equal texts give no diff", function () {
    expect(unifiedDiff("a\n", "a\n", "x", "x")).to.equal("");
  });

  it("a last line without a newline is marked", function () {
    const diff = unifiedDiff("a\nb", "a\nc", "x", "x");
    expect(diff).to.contain("-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n");
    expect(patched("a\nb", diff)).to.equal("a\nc");
  });

  it("changes far apart make separate hunks, and patch applies them", function () {
    const lines = Array.from({ length: 40 }, (_, i) => `line ${i}`);
    const before = lines.join("\n") + "\n";
    const after = lines.map((l, i) => (i === 2 ? "first" : i === 30 ? "second" : l)).join("\n") + "\n";
    const diff = unifiedDiff(before, after, "x", "x");
    expect(diff.match(/^@@/gm)).to.have.length(2);
    expect(patched(before, diff)).to.equal(after);
  });

  it("patch turns the old text into the new one (generated pairs)", function () {
    const line = fc.constantFrom("a", "b", "c", "fn main() {", "}", "", "    x;");
    const text = fc
      .array(line, { maxLength: 12 })
      .chain((ls) => fc.boolean().map((nl) => ls.join("\n") + (nl && ls.length > 0 ? "\n" : "")));
    fc.assert(
      fc.property(text, text, (before, after) => {
        const diff = unifiedDiff(before, after, "x", "x");
        if (before === after) return diff === "";
        return patched(before, diff) === after;
      }),
      { numRuns: 150 },
    );
  });
});
