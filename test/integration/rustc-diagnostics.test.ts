import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { Severity } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";

describe("Compile returns rustc's diagnostics as data", function () {
  let daemon: TestDaemon;

  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  it("a type error is ok=false (status OK) with E0308 at the right line and column", async function () {
    const source = [
      "fn main() {", // line 1
      "    let answer: u32 = 42;", // line 2
      '    let label: u32 = "forty-two";', // line 3: col 22 is the string literal
      '    println!("{} {}", answer, label);',
      "}",
      "",
    ].join("\n");
    const response = await daemon.compile({ input: { $case: "source", value: source } });
    expect(response.ok).to.equal(false);
    expect(response.moduleId).to.equal("");
    const error = response.diagnostics.find((d) => d.code === "E0308");
    expect(error, JSON.stringify(response.diagnostics)).to.not.equal(undefined);
    expect(error!.severity).to.equal(Severity.SEVERITY_ERROR);
    const primary = error!.spans.find((s) => s.primary)!;
    expect(primary).to.include({ lineStart: 3, columnStart: 22, lineEnd: 3, columnEnd: 33 });
    expect(error!.rendered).to.contain("mismatched types");
  });

  it("the same source compiles to the same module id, and the second time from the cache", async function () {
    const source = 'fn main() { println!("cached"); }\n';
    const first = await daemon.compile({ input: { $case: "source", value: source } });
    const second = await daemon.compile({ input: { $case: "source", value: source } });
    expect(first.ok).to.equal(true);
    expect(second.moduleId).to.equal(first.moduleId);
    expect(second.cacheHit).to.equal(true);
  });
});

describe("a daemon without a usable toolchain", function () {
  let daemon: TestDaemon;

  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--rustc", "/nonexistent/rustc"] });
  });
  after(async function () {
    await daemon?.stop();
  });

  it("still starts, and Compile answers FAILED_PRECONDITION saying what to install", async function () {
    const r = await rejection(daemon.compile({ input: { $case: "source", value: "fn main() {}" } }));
    expect(r).to.include({ code: status.FAILED_PRECONDITION, reason: "TOOLCHAIN_MISSING" });
    expect(r.details).to.contain("apt-get install rustc libstd-rust-dev-wasm32");
  });
});

describe("the toolchain probe does not hold up start-up", function () {
  it("serves before a slow rustc probe ends; Compile waits for it, then says what to install", async function () {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-slow-rustc-"));
    const slowRustc = path.join(dir, "rustc");
    // A "rustc" that takes 3 s to answer anything, then fails: no usable toolchain, found slowly.
    await writeFile(slowRustc, "#!/bin/sh\nsleep 3\nexit 1\n");
    await chmod(slowRustc, 0o755);
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--rustc", slowRustc] });
    try {
      expect(daemon.logs(), "listening came before the probe's verdict").to.not.contain("Compile is unavailable");
      const r = await rejection(daemon.compile({ input: { $case: "source", value: "fn main() {}" } }));
      expect(r).to.include({ code: status.FAILED_PRECONDITION, reason: "TOOLCHAIN_MISSING" });
    } finally {
      await daemon.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
