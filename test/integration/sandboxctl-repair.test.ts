/**
 * `sandboxctl compile --repair FILE` against a real daemon: the diff it prints applies (GNU patch)
 * and gives the repaired source, `--write` replaces the file (keeping its mode), a script with no
 * repair leaves the file alone and exits 1, and a daemon that is not there is a clear error.
 */
import { execFile, execFileSync } from "node:child_process";
import { chmod, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { REPAIR_CASES } from "../fixtures/repair/cases.js";
import { tempDir } from "../unit/policy-fixtures.js";

const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function sandboxctl(...args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SANDBOXCTL, ...args], { encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr });
    });
  });
}

const table = (name: string): { broken: string; repaired: string | undefined } => REPAIR_CASES.find((c) => c.name === name)!;

describe("sandboxctl compile --repair (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  let tmp: { path: string; remove: () => Promise<void> };
  before(async function () {
    daemon = await startDaemon();
    tmp = await tempDir("sandboxctl-repair");
  });
  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  it("prints the repair as a unified diff that patch applies, each edit on stderr, and leaves the file alone", async function () {
    const { broken, repaired } = table("two_mistakes");
    const file = path.join(tmp.path, "two.rs");
    await writeFile(file, broken);
    const r = await sandboxctl("compile", "--repair", "--socket", daemon.socketPath, file);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^--- .*two\.rs\n\+\+\+ .*two\.rs\n@@ /);
    expect(r.stderr).to.contain('insert ";" (MACHINE_APPLICABLE), add `;` here; fixes expected `;`, found `println`');
    expect(r.stderr).to.contain("(MAYBE_INCORRECT), consider importing this struct; fixes E0433");
    expect(r.stderr).to.contain("repaired in 1 round");
    expect(await readFile(file, "utf8"), "no --write: the file is untouched").to.equal(broken);
    const copy = path.join(tmp.path, "copy.rs");
    await writeFile(copy, broken);
    execFileSync("patch", ["--quiet", copy], { input: r.stdout });
    expect(await readFile(copy, "utf8")).to.equal(repaired);
  });

  it("--write replaces the file with the repaired source, keeping its mode", async function () {
    const { broken, repaired } = table("semicolon_then_mut");
    const file = path.join(tmp.path, "mut.rs");
    await writeFile(file, broken);
    await chmod(file, 0o640);
    const r = await sandboxctl("compile", "--repair", "--write", "--socket", `unix://${daemon.socketPath}`, file);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.contain("repaired in 2 rounds");
    expect(await readFile(file, "utf8")).to.equal(repaired);
    expect((await stat(file)).mode & 0o777).to.equal(0o640);
  });

  it("a script with no usable suggestion: its errors on stderr, exit 1, the file untouched even with --write", async function () {
    const { broken } = table("clone_moved");
    const file = path.join(tmp.path, "moved.rs");
    await writeFile(file, broken);
    const r = await sandboxctl("compile", "--repair", "--write", "--socket", daemon.socketPath, file);
    expect(r.code).to.equal(1);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.contain("E0382").and.contain("rustc's suggestions do not repair it");
    expect(await readFile(file, "utf8")).to.equal(broken);
  });

  it("a script that compiles needs no repair: exit 0, nothing on stdout", async function () {
    const file = path.join(tmp.path, "ok.rs");
    await writeFile(file, "fn main() {}\n");
    const r = await sandboxctl("compile", "--repair", "--socket", daemon.socketPath, file);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.contain("nothing to repair");
  });

  it("--json prints the repair and the source's errors as JSON", async function () {
    const { broken, repaired } = table("borrow");
    const file = path.join(tmp.path, "borrow.rs");
    await writeFile(file, broken);
    const r = await sandboxctl("compile", "--repair", "--json", "--socket", daemon.socketPath, file);
    expect(r.code, r.stderr).to.equal(0);
    const json = JSON.parse(r.stdout) as {
      ok: boolean;
      repair: { source: string; edits: { span: { applicability: string } }[] };
      errors: { code: string }[];
    };
    expect(json.ok).to.equal(false);
    expect(json.repair.source).to.equal(repaired);
    expect(json.repair.edits[0]!.span.applicability).to.equal("APPLICABILITY_MACHINE_APPLICABLE");
    expect(json.errors.map((e) => e.code)).to.deep.equal(["E0308"]);
  });

  it("errors: a missing file and a bad command line are usage errors (2); no daemon is a failure (1)", async function () {
    const missing = await sandboxctl("compile", "--repair", "--socket", daemon.socketPath, path.join(tmp.path, "nope.rs"));
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.contain("cannot read");
    const two = await sandboxctl("compile", "--repair", "a.rs", "b.rs");
    expect(two.code).to.equal(2);
    const file = path.join(tmp.path, "x.rs");
    await writeFile(file, "fn main() { let x = 1 }\n");
    const absent = await sandboxctl("compile", "--repair", "--socket", path.join(tmp.path, "no-daemon.sock"), file);
    expect(absent.code).to.equal(1);
    expect(absent.stderr).to.match(/^sandboxctl: UNAVAILABLE: /);
  });
});
