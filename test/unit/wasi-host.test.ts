import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_OPEN_FDS } from "../../src/limits.js";
import { validateCommandModule } from "../../src/runtime/wasm/validate.js";
import { guestWasmPath, loadGuest, openFdCount, runGuest } from "../fixtures/wasi/guest.js";

describe("WASI host: process, stdio, clocks, limits", function () {
  this.timeout(120_000);
  let probe: WebAssembly.Module;
  let dir: string;

  before(() => {
    probe = loadGuest("probe");
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "sandboxd-wasi-host-"));
    writeFileSync(join(dir, "f"), "content");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("passes validation as a preview1 command", () => {
    expect(validateCommandModule(probe, readFileSync(guestWasmPath("probe")))).to.deep.equal([]);
  });

  it("returning from _start is exit 0, proc_exit(n) is exit n", () => {
    expect(runGuest(probe, ["hello"]).result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(runGuest(probe, ["exit", "42"]).result).to.deep.equal({ outcome: "exited", exitCode: 42 });
    expect(runGuest(probe, ["exit", "0"]).result).to.deep.equal({ outcome: "exited", exitCode: 0 });
  });

  it("gives args exactly as requested, argv[0] included", () => {
    const run = runGuest(probe, ["args", "two words", "", 'ünï"code']);
    expect(run.stdout).to.equal(`ok ["probe.wasm", "args", "two words", "", "ünï\\"code"]\n`);
  });

  it("gives exactly the requested environment and nothing of the daemon's", () => {
    const run = runGuest(probe, ["env"], {
      env: new Map([
        ["A", "1"],
        ["EMPTY", ""],
        ["EQ", "x=y"],
      ]),
    });
    expect(run.stdout).to.equal(`ok ["A=1", "EMPTY=", "EQ=x=y"]\n`);
  });

  it("gives an env var named __proto__ (and constructor, toString) like any other", () => {
    const run = runGuest(probe, ["env"], {
      env: new Map([
        ["__proto__", "p"],
        ["constructor", "c"],
        ["toString", "t"],
      ]),
    });
    expect(run.stdout).to.equal(`ok ["__proto__=p", "constructor=c", "toString=t"]\n`);
  });

  it("feeds stdin", () => {
    const run = runGuest(probe, ["stdin"], { stdin: new TextEncoder().encode('{"k": [1,2]}') });
    expect(run.stdout).to.equal('ok {"k": [1,2]}\n');
  });

  it("sleeps for real in poll_oneoff and flushes before blocking", () => {
    let flushes = 0;
    const started = Date.now();
    const run = runGuest(probe, ["sleep", "120"], { flush: () => flushes++ });
    expect(run.result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    expect(Date.now() - started).to.be.at.least(120);
    expect(Number(run.stdout.split(" ")[1])).to.be.at.least(120);
    expect(flushes).to.be.at.least(1);
  });

  it("delivers output up to exactly the cap, then ends as output_limit", () => {
    const run = runGuest(probe, ["spam"], { maxOutputBytes: 12_345 });
    expect(run.result.outcome).to.equal("output_limit");
    expect(run.stdoutBytes).to.equal(12_345);
  });

  it("ends a Vec growing past the memory cap as memory_limit", () => {
    const small = loadGuest("probe", 16 * 1024 * 1024);
    const run = runGuest(small, ["oom"], { memoryLimitBytes: 16 * 1024 * 1024 });
    expect(run.result.outcome).to.equal("memory_limit");
    if (run.result.outcome === "memory_limit") expect(run.result.message).to.match(/memory/);
  });

  it("turns a stack overflow into a trap", () => {
    const run = runGuest(probe, ["stack", "100000000"]);
    expect(run.result.outcome).to.equal("trap");
  });

  it("turns `unreachable` into a trap with the engine's message", () => {
    const run = runGuest(probe, ["unreachable"]);
    expect(run.result).to.deep.equal({ outcome: "trap", message: "unreachable" });
  });

  it("refuses sockets: sock_accept is ENOTCAPABLE", () => {
    const run = runGuest(probe, ["sock-accept"], { mounts: [{ hostPath: dir, guestPath: "/data", writable: true }] });
    expect(run.stdout).to.equal("err 76\n");
  });

  it("caps open descriptors at MAX_OPEN_FDS with EMFILE and a denial", () => {
    const run = runGuest(probe, ["open-many", "/data/f", String(MAX_OPEN_FDS + 10)], {
      mounts: [{ hostPath: dir, guestPath: "/data", writable: false }],
    });
    // The preopen counts towards the cap.
    expect(run.stdout).to.equal(`err 33 after ${MAX_OPEN_FDS - 1}\n`);
    expect(run.denials.some((d) => d.operation === "path_open" && /descriptor limit/.test(d.reason))).to.equal(true);
  });

  for (const [how, args, outcome] of [
    ["exits", ["open-and-exit", "/data/f", "20", "3"], "exited"],
    ["traps", ["open-and-trap", "/data/f", "20"], "trap"],
    ["returns", ["open-many", "/data/f", "20"], "exited"],
  ] as const) {
    it(`releases every host fd when the guest ${how} with files open`, () => {
      const before = openFdCount();
      const run = runGuest(probe, [...args], { mounts: [{ hostPath: dir, guestPath: "/data", writable: false }] });
      expect(run.result.outcome).to.equal(outcome);
      expect(openFdCount()).to.equal(before);
    });
  }
});
