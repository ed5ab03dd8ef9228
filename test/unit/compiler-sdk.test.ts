import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { WASI } from "node:wasi";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { execa } from "execa";
import { loadSdk, type SdkArtifacts } from "../../src/compiler/sdk.js";

// These tests need the SDK built by scripts/build-sdk (scripts/setup runs it) and Debian's rustc.
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SDK_DIR = path.join(ROOT, "build/sdk");
const RUSTC = "/usr/bin/rustc";

/** Runs a module with node:wasi: only to observe the SDK's stdio contract, independent of our runtime. */
async function runWasm(wasm: Buffer, stdin: string, dir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const files = ["in", "out", "err"].map((n) => path.join(dir, n));
  await writeFile(files[0]!, stdin);
  await writeFile(files[1]!, "");
  await writeFile(files[2]!, "");
  const { openSync, closeSync } = await import("node:fs");
  const fds = [openSync(files[0]!, "r"), openSync(files[1]!, "w"), openSync(files[2]!, "w")];
  try {
    const wasi = new WASI({
      version: "preview1",
      args: ["main"],
      env: {},
      stdin: fds[0],
      stdout: fds[1],
      stderr: fds[2],
      returnOnExit: true,
    });
    const instance = await WebAssembly.instantiate(
      await WebAssembly.compile(new Uint8Array(wasm)),
      wasi.getImportObject() as WebAssembly.Imports,
    );
    const code = wasi.start(instance);
    return { code, stdout: await readFile(files[1]!, "utf8"), stderr: await readFile(files[2]!, "utf8") };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

describe("script SDK (build/sdk)", function () {
  let sdk: SdkArtifacts;
  let dir: string;

  before(async function () {
    const loaded = await loadSdk(SDK_DIR);
    if (!loaded) throw new Error(`no SDK in ${SDK_DIR}: run scripts/build-sdk`);
    sdk = loaded;
    dir = await mkdtemp(path.join(tmpdir(), "sdk-test-"));
  });

  after(async function () {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function compile(source: string): Promise<Buffer> {
    const src = path.join(dir, "main.rs");
    const out = path.join(dir, "main.wasm");
    await writeFile(src, source);
    const r = await execa(
      RUSTC,
      ["--edition", "2021", "--crate-type", "bin", "-O", "--target", sdk.target, ...sdk.rustcArgs, "-o", out, src],
      { reject: false },
    );
    if (r.exitCode !== 0) throw new Error(`rustc failed:\n${r.stderr}`);
    return readFile(out);
  }

  it("describes itself: rustc args for the three crates, a 64-hex identity, the deps dir", function () {
    expect(sdk.sdkHash).to.match(/^[0-9a-f]{64}$/);
    const externs = sdk.rustcArgs.filter((a) => /^(sandbox_sdk|serde|serde_json)=/.test(a)).map((a) => a.split("=")[0]);
    expect(externs).to.deep.equal(["sandbox_sdk", "serde", "serde_json"]);
    expect(sdk.rustcArgs.at(-1)).to.equal(`dependency=${path.join(SDK_DIR, "deps")}`);
    expect(sdk.readOnlyPaths).to.deep.equal([path.join(SDK_DIR, "deps")]);
  });

  it("lets a script use sandbox_sdk, serde and serde_json with derives and no extern crate lines", async function () {
    const wasm = await compile(`
      use serde::{Deserialize, Serialize};
      #[derive(Deserialize)] struct In { a: i64, b: i64 }
      #[derive(Serialize)] struct Out { sum: i64, echo: serde_json::Value }
      fn main() {
        sandbox_sdk::log!("adding {} numbers", 2);
        sandbox_sdk::run(|i: In| Ok(Out { sum: i.a + i.b, echo: serde_json::json!([i.a, i.b]) }))
      }`);
    const r = await runWasm(wasm, '{"a":40,"b":2}', dir);
    expect(r).to.deep.equal({ code: 0, stdout: '{"sum":42,"echo":[40,2]}\n', stderr: "adding 2 numbers\n" });
  });

  it("fails with a structured error and exit status 1, from run's Err and from a bad context", async function () {
    const wasm = await compile(`
      use sandbox_sdk::prelude::*;
      #[derive(Deserialize)] struct In { name: String }
      fn main() { run(|i: In| -> Result<Value, Error> { Err(Error::new("NOPE", format!("no {}", i.name))) }) }`);
    const failed = await runWasm(wasm, '{"name":"x"}', dir);
    expect(failed.code).to.equal(1);
    expect(JSON.parse(failed.stdout)).to.deep.equal({ error: { code: "NOPE", message: "no x" } });
    const bad = await runWasm(wasm, "not json", dir);
    expect(bad.code).to.equal(1);
    expect(JSON.parse(bad.stdout).error.code).to.equal("INVALID_CONTEXT");
  });

  it("compiles and runs every example in sdk/rust/README.md", async function () {
    const readme = await readFile(path.join(ROOT, "sdk/rust/README.md"), "utf8");
    const examples = [...readme.matchAll(/```rust\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
    expect(examples).to.have.length.greaterThan(1);
    for (const source of examples) await compile(source);
    // the first example's documented behaviour
    const order = await compile(examples[0]!);
    const ok = await runWasm(order, '{"items":[{"name":"tea","price_cents":250,"quantity":2}]}', dir);
    expect(ok.stdout).to.equal('{"total_cents":500,"count":2}\n');
    const empty = await runWasm(order, '{"items":[]}', dir);
    expect(empty.code).to.equal(1);
    expect(empty.stdout).to.equal('{"error":{"code":"EMPTY_ORDER","message":"an order needs at least one item"}}\n');
  });

  it("refuses an SDK built by another rustc or for another target", async function () {
    const warnings: string[] = [];
    expect(await loadSdk(SDK_DIR, { rustcVersion: "rustc 9.99.0" }, (m) => warnings.push(m))).to.equal(undefined);
    expect(await loadSdk(SDK_DIR, { target: "wasm32-unknown-unknown" }, (m) => warnings.push(m))).to.equal(undefined);
    expect(await loadSdk(path.join(dir, "nowhere"), {}, (m) => warnings.push(m))).to.equal(undefined);
    expect(warnings).to.have.length(3);
    expect(warnings[2]).to.contain("scripts/build-sdk");
  });
});
