import { execFile } from "node:child_process";
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "chai";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** The real build script and contract; the TypeScript sources are a few small stand-ins. */
const COPIED = ["scripts/build", "proto", "buf.gen.yaml", "buf.yaml", "package.json", "package-lock.json"];
const LIMITS = "/** A limit. */\nexport const SHUTDOWN_GRACE_MS = 5_000;\n";

/** Runs scripts/build in `dir`; returns what it logged. */
async function build(dir: string): Promise<string> {
  const { stderr } = await promisify(execFile)(path.join(dir, "scripts/build"), { cwd: dir });
  return stderr;
}

describe("scripts/build: rebuilds what changed, never leaves a stale dist/", function () {
  // Five real tsc runs; on a loaded two-core machine each can take 20 s.
  this.timeout(180_000);
  let dir: string;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), "sandboxd-build-"));
    for (const entry of COPIED) await cp(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
    await symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    // The real tsconfig.json (its incremental state and outDir are what the script relies on),
    // without the DOM library and mocha's types, which the stand-ins do not need and which triple tsc's time.
    const tsconfig = JSON.parse(await readFile(path.join(ROOT, "tsconfig.json"), "utf8")) as { compilerOptions: Record<string, unknown> };
    expect(tsconfig.compilerOptions).to.include({ incremental: true, tsBuildInfoFile: "dist/.tsbuildinfo", outDir: "dist" });
    tsconfig.compilerOptions["lib"] = ["ES2023"];
    tsconfig.compilerOptions["types"] = ["node"];
    await writeFile(path.join(dir, "tsconfig.json"), JSON.stringify(tsconfig));
    for (const sub of ["src/cli", "test", "bench"]) await mkdir(path.join(dir, sub), { recursive: true });
    await writeFile(path.join(dir, "src/limits.ts"), LIMITS);
    // The two entry points the build marks executable; one uses the generated code.
    await writeFile(
      path.join(dir, "src/cli/sandboxd.ts"),
      'import { Policy } from "../gen/pb/sandbox/v1/sandbox.js";\nimport { SHUTDOWN_GRACE_MS } from "../limits.js";\nexport const probe = [Policy, SHUTDOWN_GRACE_MS];\n',
    );
    await writeFile(path.join(dir, "src/cli/sandboxctl.ts"), "export {};\n");
    const first = await build(dir);
    expect(first).to.contain("generating src/gen").and.to.contain("compiling TypeScript");
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it("does nothing on an unchanged tree", async function () {
    expect(await build(dir)).to.equal("");
  });

  it("rebuilds after a source change even when the file keeps its old mtime", async function () {
    const source = path.join(dir, "src/limits.ts");
    const before = await stat(source);
    await writeFile(source, LIMITS.replace("5_000", "5_001"));
    // As `cp -p`, `tar x` or a restore from backup would leave it: older than dist/.
    await utimes(source, before.atime, before.mtime);
    expect(await build(dir)).to.equal("[build] compiling TypeScript\n");
    expect(await readFile(path.join(dir, "dist/src/limits.js"), "utf8")).to.contain("SHUTDOWN_GRACE_MS = 5_001");
    expect(await build(dir)).to.equal("");
  });

  it("emits everything again when an output went missing from dist/ (incremental tsc alone would not)", async function () {
    await rm(path.join(dir, "dist/src/limits.js"));
    expect(await build(dir)).to.contain("the output of src/limits.ts is missing");
    expect((await stat(path.join(dir, "dist/src/limits.js"))).isFile()).to.equal(true);
  });

  it("regenerates src/gen when the contract changes, and only then", async function () {
    await appendFile(path.join(dir, "proto/sandbox/v1/sandbox.proto"), "\n// a comment changes the input, so the stamp\n");
    expect(await build(dir)).to.contain("generating src/gen");
    expect(await build(dir)).to.equal("");
  });
});
