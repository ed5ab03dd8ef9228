import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";

describe("bad requests get a clear status and never hurt the daemon", function () {
  let daemon: TestDaemon;

  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  afterEach(async function () {
    // Whatever the previous case sent, the daemon still answers.
    const ok = await daemon.execute({ target: sourceTarget(script("exit_42")) });
    expect(ok.exitCode).to.equal(42);
  });

  it("Compile with neither source nor wasm → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.compile({ input: undefined }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_REQUEST" });
  });

  it("Compile with empty source → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.compile({ input: { $case: "source", value: "  \n" } }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "EMPTY_SOURCE" });
  });

  it("Compile with garbage wasm → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.compile({ input: { $case: "wasm", value: Buffer.from("definitely not wasm") } }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
  });

  it("Compile with empty wasm → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.compile({ input: { $case: "wasm", value: Buffer.alloc(0) } }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
  });

  it("Compile with a valid wasm module that is not a WASI command → INVALID_ARGUMENT naming what is missing", async function () {
    // The smallest valid module: magic + version, nothing else (no _start, no memory).
    const empty = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    const r = await rejection(daemon.compile({ input: { $case: "wasm", value: empty } }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_WASM" });
    expect(r.details).to.match(/_start/);
  });

  it("Execute with neither module_id nor source → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.execute({ target: undefined }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_REQUEST" });
  });

  it("Execute with empty source → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.execute({ target: sourceTarget("") }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "EMPTY_SOURCE" });
  });

  it("Execute with a malformed module_id → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.execute({ target: moduleTarget("../../etc/passwd") }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_MODULE_ID" });
  });

  it("Execute with an unknown module_id → NOT_FOUND", async function () {
    const r = await rejection(daemon.execute({ target: moduleTarget("f".repeat(64)) }));
    expect(r).to.include({ code: status.NOT_FOUND, reason: "MODULE_NOT_FOUND" });
  });

  it("StreamOutput with an unknown module_id → NOT_FOUND", async function () {
    const r = await rejection(daemon.stream({ target: moduleTarget("e".repeat(64)) }));
    expect(r).to.include({ code: status.NOT_FOUND, reason: "MODULE_NOT_FOUND" });
  });

  it("StreamOutput with no target → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.stream({ target: undefined }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_REQUEST" });
  });

  it("Execute with an env key containing '=' → INVALID_ARGUMENT", async function () {
    const r = await rejection(daemon.execute({ target: sourceTarget(script("exit_42")), env: new Map([["A=B", "c"]]) }));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_REQUEST" });
  });
});
