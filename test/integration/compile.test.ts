import { Metadata, status } from "@grpc/grpc-js";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { MAX_WASM_BYTES } from "../../src/limits.js";
import { Applicability, Outcome, Severity, type CompileResponse } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { childPids } from "../helpers/processes.js";

const src = (value: string): { input: { $case: "source"; value: string } } => ({ input: { $case: "source", value } });
const wasmInput = (value: Uint8Array): { input: { $case: "wasm"; value: Buffer } } => ({
  input: { $case: "wasm", value: Buffer.from(value) },
});

/** A source nobody compiled before, so the test sees a cold compile. */
const fresh = (body = 'println!("hi");'): string => `// ${randomBytes(8).toString("hex")}\nfn main() { ${body} }\n`;

function primary(r: CompileResponse, code: string): { lineStart: number; columnStart: number; lineEnd: number; columnEnd: number } {
  const d = r.diagnostics.find((x) => x.code === code);
  expect(d, JSON.stringify(r.diagnostics, null, 1)).to.not.equal(undefined);
  const s = d!.spans.find((x) => x.primary);
  expect(s).to.not.equal(undefined);
  return s!;
}

describe("Compile: diagnostics an agent can act on (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  it("E0308 type mismatch: error severity, code, exact span, label and rendered text", async function () {
    const r = await daemon.compile(src('fn main() {\n    let x: i32 = "hello";\n    println!("{}", x);\n}\n'));
    expect(r.ok).to.equal(false);
    const d = r.diagnostics.find((x) => x.code === "E0308")!;
    expect(d.severity).to.equal(Severity.SEVERITY_ERROR);
    expect(d.message).to.equal("mismatched types");
    expect(d.spans).to.deep.include({
      lineStart: 2,
      columnStart: 18,
      lineEnd: 2,
      columnEnd: 25,
      primary: true,
      label: "expected `i32`, found `&str`",
      suggestedReplacement: "",
      applicability: Applicability.APPLICABILITY_UNSPECIFIED,
    });
    expect(d.rendered).to.contain("--> main.rs:2:18");
    // rustc's closing tallies are not diagnostics
    expect(r.diagnostics.map((x) => x.message).join("\n")).to.not.contain("aborting due to");
  });

  it("E0425 unresolved name: the help child carries the suggested replacement", async function () {
    const r = await daemon.compile(src('fn main() {\n    let total = 1;\n    println!("{}", totl);\n}\n'));
    expect(primary(r, "E0425")).to.include({ lineStart: 3, columnStart: 20, columnEnd: 24 });
    const d = r.diagnostics.find((x) => x.code === "E0425")!;
    const help = d.children.find((c) => c.severity === Severity.SEVERITY_HELP);
    expect(help?.spans[0]?.suggestedReplacement).to.equal("total");
  });

  it("E0502 borrow error: all three labelled spans", async function () {
    const r = await daemon.compile(
      src('fn main() {\n    let mut v = vec![1, 2, 3];\n    let first = &v[0];\n    v.push(4);\n    println!("{}", first);\n}\n'),
    );
    const d = r.diagnostics.find((x) => x.code === "E0502")!;
    expect(d.spans.map((s) => [s.lineStart, s.label])).to.deep.equal([
      [4, "mutable borrow occurs here"],
      [3, "immutable borrow occurs here"],
      [5, "immutable borrow later used here"],
    ]);
  });

  it("missing semicolon: the suggestion says to insert `;` at the end of line 2", async function () {
    const r = await daemon.compile(src('fn main() {\n    let a = 1\n    let b = 2;\n    println!("{}", a + b);\n}\n'));
    expect(r.ok).to.equal(false);
    const d = r.diagnostics[0]!;
    expect(d.message).to.contain("expected `;`");
    const fix = d.children.flatMap((c) => c.spans).find((s) => s.suggestedReplacement === ";");
    expect(fix).to.include({ lineStart: 2, columnStart: 14, lineEnd: 2, columnEnd: 14 });
  });

  it("a warning-only compile succeeds and returns its warnings, also on a cache hit", async function () {
    const source = `// ${randomBytes(6).toString("hex")}\nfn main() {\n    let unused = 5;\n    println!("hi");\n}\n`;
    const first = await daemon.compile(src(source));
    expect(first.ok).to.equal(true);
    expect(first.cacheHit).to.equal(false);
    const w = first.diagnostics.find((x) => x.code === "unused_variables")!;
    expect(w.severity).to.equal(Severity.SEVERITY_WARNING);
    expect(w.spans[0]).to.include({ lineStart: 3, columnStart: 9 });
    const again = await daemon.compile(src(source));
    expect(again.cacheHit).to.equal(true);
    expect(again.diagnostics).to.deep.equal(first.diagnostics);
  });
});

describe("Compile: the script SDK is linked into every script", function () {
  let daemon: TestDaemon;
  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  it("a script uses sandbox_sdk, serde derive and serde_json with no extern crate lines", async function () {
    const source = [
      "use sandbox_sdk::prelude::*;",
      "#[derive(Deserialize)] struct In { a: i64, b: i64 }",
      "#[derive(Serialize)] struct Out { sum: i64, note: Value }",
      "fn main() {",
      '    log!("adding");',
      '    run(|i: In| if i.b == 0 { Err(Error::new("ZERO", "b must not be 0")) } else { Ok(Out { sum: i.a + i.b, note: serde_json::json!("ok") }) })',
      "}",
    ].join("\n");
    const r = await daemon.compile(src(source));
    expect(r.ok, JSON.stringify(r.diagnostics)).to.equal(true);
    const ok = await daemon.execute({ target: moduleTarget(r.moduleId), stdin: Buffer.from('{"a":40,"b":2}') });
    expect(ok.exitCode).to.equal(0);
    expect(JSON.parse(ok.stdout.toString())).to.deep.equal({ sum: 42, note: "ok" });
    expect(ok.stderr.toString()).to.equal("adding\n");
    const failed = await daemon.execute({ target: moduleTarget(r.moduleId), stdin: Buffer.from('{"a":1,"b":0}') });
    expect(failed.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(failed.exitCode).to.equal(1);
    expect(JSON.parse(failed.stdout.toString())).to.deep.equal({ error: { code: "ZERO", message: "b must not be 0" } });
  });
});

describe("Compile: hostile source cannot read the host", function () {
  const SECRET_ENV = "SANDBOXD_COMPILE_TEST_SECRET";
  let daemon: TestDaemon;
  let secretDir: string;
  let secret: string;
  before(async function () {
    secret = `TOPSECRET-${randomBytes(12).toString("hex")}`;
    secretDir = await mkdtemp(path.join(tmpdir(), "compile-secret-"));
    await writeFile(path.join(secretDir, "secret.txt"), secret);
    daemon = await startDaemon({ env: { [SECRET_ENV]: secret } });
  });
  after(async function () {
    await daemon?.stop();
    await rm(secretDir, { recursive: true, force: true });
  });

  for (const [name, body] of [
    ["include_str!", `include_str!("SECRET_FILE")`],
    ["include_bytes!", `include_bytes!("SECRET_FILE").len()`],
    ["env!", `env!("${SECRET_ENV}")`],
  ] as const) {
    it(`${name} of a daemon secret is a compile error that does not contain it`, async function () {
      const r = await daemon.compile(
        src(`fn main() { println!("{:?}", ${body.replace("SECRET_FILE", path.join(secretDir, "secret.txt"))}); }`),
      );
      expect(r.ok).to.equal(false);
      expect(r.diagnostics.some((d) => d.severity === Severity.SEVERITY_ERROR)).to.equal(true);
      expect(JSON.stringify(r)).to.not.contain(secret);
    });
  }

  it("option_env! of a daemon secret compiles to None: the module does not contain it", async function () {
    const r = await daemon.compile(src(`fn main() { println!("{:?}", option_env!("${SECRET_ENV}")); }`));
    expect(r.ok).to.equal(true);
    const run = await daemon.execute({ target: moduleTarget(r.moduleId) });
    expect(run.stdout.toString()).to.equal("None\n");
  });

  it("#[path] mod of a host file fails", async function () {
    const r = await daemon.compile(src(`#[path = "/etc/passwd"] mod x;\nfn main() {}`));
    expect(r.ok).to.equal(false);
    expect(JSON.stringify(r)).to.not.contain("root:x:0:0");
  });
});

describe("Compile: module cache", function () {
  let cacheDir: string;
  before(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "compile-cache-"));
  });
  after(async function () {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("a restarted daemon serves ids compiled before the restart without recompiling", async function () {
    const source = fresh('println!("persisted");');
    const first = await startDaemon({ cacheDir });
    let id: string;
    try {
      const r = await first.compile(src(source));
      expect(r).to.include({ ok: true, cacheHit: false });
      id = r.moduleId;
    } finally {
      await first.stop();
    }
    const second = await startDaemon({ cacheDir, args: ["--allow-unsigned", "--log-level", "debug"] });
    try {
      const again = await second.compile(src(source));
      expect(again).to.include({ ok: true, cacheHit: true, moduleId: id });
      const run = await second.execute({ target: moduleTarget(id) });
      expect(run.stdout.toString()).to.equal("persisted\n");
      expect(second.logs()).to.not.contain('"message":"compiled"');
    } finally {
      await second.stop();
    }
  });

  it("a corrupt entry is evicted and rebuilt, never executed", async function () {
    const source = fresh('println!("intact");');
    const d1 = await startDaemon({ cacheDir });
    const id = (await d1.compile(src(source))).moduleId;
    await d1.stop();
    // flip one byte in the middle of the module
    const file = path.join(cacheDir, "modules", `${id}.mod`);
    const raw = await readFile(file);
    raw[Math.floor(raw.byteLength / 2)] ^= 0x55;
    await writeFile(file, raw);

    const d2 = await startDaemon({ cacheDir });
    try {
      const byId = await rejection(d2.execute({ target: moduleTarget(id) }));
      expect(byId).to.include({ code: status.NOT_FOUND, reason: "MODULE_NOT_FOUND" });
      expect(d2.logs()).to.contain("corrupt");
      const rebuilt = await d2.compile(src(source));
      expect(rebuilt).to.include({ ok: true, cacheHit: false, moduleId: id });
      expect((await d2.execute({ target: moduleTarget(id) })).stdout.toString()).to.equal("intact\n");
    } finally {
      await d2.stop();
    }
  });

  it("N concurrent identical Compiles run rustc once", async function () {
    const daemon = await startDaemon({ cacheDir, args: ["--allow-unsigned", "--log-level", "debug"] });
    try {
      const source = fresh('println!("once");');
      const results = await Promise.all(Array.from({ length: 6 }, () => daemon.compile(src(source))));
      const ids = new Set(results.map((r) => r.moduleId));
      expect(ids.size).to.equal(1);
      expect(results.every((r) => r.ok)).to.equal(true);
      const compiledLines = daemon
        .logs()
        .split("\n")
        .filter((l) => l.includes('"message":"compiled"') && l.includes([...ids][0]!));
      expect(compiledLines).to.have.length(1);
    } finally {
      await daemon.stop();
    }
  });

  it("kill -9 in the middle of compiles leaves no entry that is later served corrupt", async function () {
    this.timeout(180_000);
    const sources = [0, 1, 2].map((i) => fresh(`println!("survivor {}", ${i});`));
    for (const delayMs of [150, 400, 900, 1500]) {
      const daemon = await startDaemon({ cacheDir });
      const pending = sources.map((s) => daemon.compile(src(s)).catch(() => undefined));
      await new Promise((r) => setTimeout(r, delayMs));
      daemon.process.kill("SIGKILL");
      await Promise.all(pending);
      await daemon.stop();
    }
    // every entry on disk either verifies or is refused; then a fresh daemon serves correct modules
    const daemon = await startDaemon({ cacheDir });
    try {
      expect((await readdir(path.join(cacheDir, "modules"))).filter((n) => n.endsWith(".tmp"))).to.deep.equal([]);
      for (const [i, s] of sources.entries()) {
        const r = await daemon.compile(src(s));
        expect(r.ok).to.equal(true);
        const run = await daemon.execute({ target: moduleTarget(r.moduleId) });
        expect(run.outcome).to.equal(Outcome.OUTCOME_EXITED);
        expect(run.stdout.toString()).to.equal(`survivor ${i}\n`);
      }
    } finally {
      await daemon.stop();
    }
  });

  it("--cache-max-bytes evicts the least recently used modules", async function () {
    const small = await mkdtemp(path.join(tmpdir(), "compile-cache-small-"));
    // a hello-world module is ~70 KiB: room for two
    const daemon = await startDaemon({ cacheDir: small, args: ["--allow-unsigned", "--cache-max-bytes", String(170 * 1024)] });
    try {
      const ids: string[] = [];
      for (const i of [0, 1, 2]) ids.push((await daemon.compile(src(fresh(`println!("{}", ${i});`)))).moduleId);
      const onDisk = (await readdir(path.join(small, "modules"))).map((n) => n.replace(/\.mod$/, ""));
      expect(onDisk).to.not.include(ids[0]);
      expect(onDisk).to.include.members([ids[1], ids[2]]);
      expect(await rejection(daemon.execute({ target: moduleTarget(ids[0]!) }))).to.include({ reason: "MODULE_NOT_FOUND" });
    } finally {
      await daemon.stop();
      await rm(small, { recursive: true, force: true });
    }
  });
});

describe("Compile: precompiled wasm uploads", function () {
  let daemon: TestDaemon;
  let work: string;
  before(async function () {
    daemon = await startDaemon();
    work = await mkdtemp(path.join(tmpdir(), "compile-wasm-"));
  });
  after(async function () {
    await daemon?.stop();
    await rm(work, { recursive: true, force: true });
  });

  async function rustc(source: string, extra: string[] = []): Promise<Buffer> {
    await writeFile(path.join(work, "m.rs"), source);
    await execa("/usr/bin/rustc", [
      "--edition",
      "2021",
      "-O",
      "--target",
      "wasm32-wasi",
      ...extra,
      "-o",
      path.join(work, "m.wasm"),
      path.join(work, "m.rs"),
    ]);
    return readFile(path.join(work, "m.wasm"));
  }

  it("a valid command module's id is the SHA-256 of its bytes, cached and runnable", async function () {
    const wasm = await rustc(fresh('println!("uploaded");'));
    const r = await daemon.compile(wasmInput(wasm));
    expect(r).to.include({ ok: true, cacheHit: false, moduleId: createHash("sha256").update(wasm).digest("hex") });
    expect((await daemon.compile(wasmInput(wasm))).cacheHit).to.equal(true);
    expect((await daemon.execute({ target: moduleTarget(r.moduleId) })).stdout.toString()).to.equal("uploaded\n");
  });

  it("garbage, a module without _start, and an empty upload are INVALID_ARGUMENT saying what is wrong", async function () {
    const garbage = await rejection(daemon.compile(wasmInput(Buffer.from("definitely not wasm"))));
    expect(garbage).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
    const lib = await rustc('#[no_mangle] pub extern "C" fn f() -> i32 { 1 }', ["--crate-type", "cdylib"]);
    const noStart = await rejection(daemon.compile(wasmInput(lib)));
    expect(noStart).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
    expect(noStart.details).to.contain("_start");
    expect(await rejection(daemon.compile(wasmInput(Buffer.alloc(0))))).to.include({ code: status.INVALID_ARGUMENT });
  });

  it("an upload over the size cap is INVALID_ARGUMENT/WASM_TOO_LARGE", async function () {
    const tooBig = Buffer.alloc(MAX_WASM_BYTES + 1);
    Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]).copy(tooBig);
    const r = await rejection(daemon.compile(wasmInput(tooBig)));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "WASM_TOO_LARGE" });
  });
});

describe("Compile queue", function () {
  it("beyond concurrency + queue limit, Compile is RESOURCE_EXHAUSTED/COMPILE_QUEUE_FULL; admitted ones still succeed", async function () {
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--compile-concurrency", "1", "--compile-max-queued", "1"] });
    try {
      const calls = [0, 1, 2, 3].map((i) =>
        daemon.compile(src(fresh(`println!("{}", ${i});`))).then(
          (r) => r,
          (e: unknown) => e,
        ),
      );
      const outcomes = await Promise.all(calls);
      const ok = outcomes.filter((o) => (o as CompileResponse).ok === true);
      const refused = await Promise.all(outcomes.filter((o) => o instanceof Error).map((e) => rejection(Promise.reject(e))));
      expect(ok).to.have.length(2);
      expect(refused).to.have.length(2);
      for (const r of refused) expect(r).to.include({ code: status.RESOURCE_EXHAUSTED, reason: "COMPILE_QUEUE_FULL" });
    } finally {
      await daemon.stop();
    }
  });
});

describe("Compile without bubblewrap", function () {
  it("is refused with FAILED_PRECONDITION unless --insecure-compile is given", async function () {
    const refusing = await startDaemon({ args: ["--allow-unsigned", "--bwrap", "/nonexistent/bwrap"] });
    try {
      const r = await rejection(refusing.compile(src("fn main() {}")));
      expect(r).to.include({ code: status.FAILED_PRECONDITION, reason: "COMPILE_SANDBOX_MISSING" });
      expect(r.details).to.contain("bubblewrap").and.contain("--insecure-compile");
    } finally {
      await refusing.stop();
    }
    const insecure = await startDaemon({ args: ["--allow-unsigned", "--bwrap", "/nonexistent/bwrap", "--insecure-compile"] });
    try {
      expect((await insecure.compile(src(fresh()))).ok).to.equal(true);
      // By the time a compile has run, not necessarily when the daemon first says it listens: it probes the toolchain after.
      expect(insecure.logs()).to.contain("INSECURE");
    } finally {
      await insecure.stop();
    }
  });
});

describe("Compile budgets", function () {
  it("a macro bomb hits the wall-clock budget: RESOURCE_EXHAUSTED/COMPILE_TIMEOUT, and the daemon keeps serving", async function () {
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--compile-timeout-ms", "3000"] });
    try {
      // each expansion doubles the tokens; rustc 1.63 grinds on it for minutes
      const bomb = `// ${randomBytes(6).toString("hex")}\nmacro_rules! b { ($($t:tt)*) => { b!($($t)* $($t)*) } }\nfn main() { b!(x); }\n`;
      const started = Date.now();
      const r = await rejection(daemon.compile(src(bomb)));
      expect(r).to.include({ code: status.RESOURCE_EXHAUSTED, reason: "COMPILE_TIMEOUT" });
      expect(r.details).to.contain("3000 ms");
      expect(Date.now() - started).to.be.below(15_000);
      expect((await daemon.compile(src(fresh()))).ok).to.equal(true);
    } finally {
      await daemon.stop();
    }
  });

  it("a client that gives up (deadline) stops its rustc: the daemon is left with no child processes", async function () {
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--compile-timeout-ms", "60000"] });
    try {
      // The daemon probes the toolchain after it starts serving: wait for that, so the 2 s deadline below
      // is spent in rustc, which is what this test is about, and not in the probe on a loaded machine.
      for (let i = 0; i < 300 && !daemon.logs().includes("script SDK loaded"); i++) await new Promise((r) => setTimeout(r, 100));
      const bomb = `// ${randomBytes(6).toString("hex")}\nmacro_rules! b { ($($t:tt)*) => { b!($($t)* $($t)*) } }\nfn main() { b!(x); }\n`;
      const children = (): Promise<string> => childPids(daemon.process.pid!);
      const call = rejection(
        new Promise((resolve, reject) =>
          daemon.client.compile(
            { input: { $case: "source", value: bomb }, repair: false },
            new Metadata(),
            { deadline: Date.now() + 2_000 },
            (e, v) => (e ? reject(e) : resolve(v)),
          ),
        ),
      );
      await new Promise((r) => setTimeout(r, 1_000));
      expect(await children(), "rustc (under bwrap) should be running").to.not.equal("");
      expect((await call).code).to.equal(status.DEADLINE_EXCEEDED);
      let left = await children();
      for (let i = 0; i < 30 && left !== ""; i++) {
        await new Promise((r) => setTimeout(r, 100));
        left = await children();
      }
      expect(left, "processes still running under the daemon").to.equal("");
    } finally {
      await daemon.stop();
    }
  });

  it("a rustc over its memory budget is RESOURCE_EXHAUSTED/COMPILE_TIMEOUT", async function () {
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--compile-memory-bytes", String(128 * 1024 * 1024)] });
    try {
      const r = await rejection(daemon.compile(src(fresh())));
      expect(r).to.include({ code: status.RESOURCE_EXHAUSTED, reason: "COMPILE_TIMEOUT" });
      expect(r.details).to.contain("memory");
    } finally {
      await daemon.stop();
    }
  });
});
