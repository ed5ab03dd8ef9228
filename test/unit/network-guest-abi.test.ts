import { expect } from "chai";
import { MAX_HTTP_REQUEST_HEAD_BYTES } from "../../src/limits.js";
import { guestHttpImports, type HttpTransport } from "../../src/runtime/net/guest-http.js";
import { HTTP_FUNCTIONS, HTTP_MODULE, HttpPart, HttpResult } from "../../src/runtime/net/http-abi.js";
import { createHttpChannel, HttpChannelClient } from "../../src/runtime/net/http-channel.js";
import type { HttpReply } from "../../src/runtime/net/http-channel.js";
import { WasiHost } from "../../src/runtime/wasi/host.js";
import type { WasiDenial } from "../../src/runtime/wasi/types.js";
import { errnosOf, i32, scriptedGuest, WASI, type FuncImport, type ScriptedCall } from "../fixtures/hostile/wasm-builder.js";

const REQUEST: FuncImport = {
  module: HTTP_MODULE,
  name: "request",
  params: [...HTTP_FUNCTIONS.request.params],
  results: [...HTTP_FUNCTIONS.request.results],
};
const READ: FuncImport = {
  module: HTTP_MODULE,
  name: "read",
  params: [...HTTP_FUNCTIONS.read.params],
  results: [...HTTP_FUNCTIONS.read.results],
};
const HEAD_AT = 0x1000;
const OUT_AT = 0x2000;
const BUF_AT = 0x3000;
const NREAD_AT = 0x2100;

/** Runs a hand-made guest making raw sandboxd_http_v1 calls; returns each call's result and the denials. */
function runRaw(calls: ScriptedCall[], head: string, transport?: HttpTransport): { results: number[]; denials: WasiDenial[] } {
  const out: Uint8Array[] = [];
  const denials: WasiDenial[] = [];
  const host = new WasiHost({
    args: ["raw.wasm"],
    env: new Map(),
    stdin: new Uint8Array(0),
    mounts: [],
    memoryLimitBytes: 1 << 20,
    maxOutputBytes: 1 << 20,
    onStdout: (b) => out.push(Buffer.from(b)),
    onStderr: () => undefined,
    onDenial: (d) => denials.push(d),
    ...(transport ? { http: transport } : {}),
  });
  const wasm = scriptedGuest([WASI.fd_write, REQUEST, READ], calls, [{ offset: HEAD_AT, bytes: [...Buffer.from(head)] }]);
  const result = host.run(new WebAssembly.Module(wasm));
  expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
  return { results: errnosOf(Buffer.concat(out)), denials };
}

const request = (headPtr: number, headLen: number, bodyPtr = 0, bodyLen = 0, out = OUT_AT): ScriptedCall => ({
  imp: 1,
  args: [...i32(headPtr), ...i32(headLen), ...i32(bodyPtr), ...i32(bodyLen), ...i32(out)],
});
const read = (part: number, offset = 0, buf = BUF_AT, len = 64, nread = NREAD_AT): ScriptedCall => ({
  imp: 2,
  args: [...i32(part), ...i32(offset), ...i32(buf), ...i32(len), ...i32(nread)],
});

describe(`network: the ${HTTP_MODULE} imports`, () => {
  const head = JSON.stringify({ url: "https://api.example.com/x" });

  it("without a network grant, a request is DENIED with a denial naming its URL, never a trap", () => {
    const { results, denials } = runRaw([request(HEAD_AT, head.length), read(HttpPart.ERROR)], head);
    expect(results).to.deep.equal([HttpResult.DENIED, HttpResult.OK]);
    expect(denials).to.deep.equal([
      { operation: "http_request", path: "https://api.example.com/x", reason: "the policy does not grant network access" },
    ]);
  });

  it("bad pointers and lengths are FAULT, and read before any request or of an unknown part too", () => {
    const { results, denials } = runRaw(
      [
        read(HttpPart.BODY),
        request(0xffff_fff0, 100),
        request(HEAD_AT, 0xffff_ffff),
        request(HEAD_AT, head.length, 0, 0, 0xffff_fffc),
        request(HEAD_AT, head.length),
        read(3),
        read(HttpPart.ERROR, 0, 0xffff_ff00),
      ],
      head,
    );
    expect(results).to.deep.equal([
      HttpResult.FAULT,
      HttpResult.FAULT,
      HttpResult.FAULT,
      HttpResult.FAULT,
      HttpResult.DENIED,
      HttpResult.FAULT,
      HttpResult.FAULT,
    ]);
    expect(denials).to.have.length(1);
  });

  it(`a head over ${MAX_HTTP_REQUEST_HEAD_BYTES} bytes is INVALID before the transport sees it`, () => {
    let sent = 0;
    const transport: HttpTransport = { send: () => (sent++, { ok: false, result: HttpResult.FAILED, message: "unreachable" }) };
    const { results, denials } = runRaw([request(HEAD_AT, MAX_HTTP_REQUEST_HEAD_BYTES + 1)], head, transport);
    expect(results).to.deep.equal([HttpResult.INVALID]);
    expect(denials[0]?.reason).to.contain("request head is larger");
    expect(sent).to.equal(0);
  });

  it("hands the head and body to the transport and copies the reply out part by part, from any offset", () => {
    const memory = new Uint8Array(0x10000);
    const sent: { head: string; body: string }[] = [];
    const reply: HttpReply = {
      ok: true,
      status: 201,
      headers: [["content-type", "text/plain"]],
      url: "https://api.example.com/x",
      body: Buffer.from("created!"),
    };
    const imports = guestHttpImports({
      transport: { send: (h, b) => (sent.push({ head: Buffer.from(h).toString(), body: Buffer.from(b).toString() }), reply) },
      memory: () => memory,
      onDenial: () => expect.fail("no denial expected"),
      endRunOutOfTime: () => expect.fail("the run has time left"),
    });
    memory.set(Buffer.from(head), HEAD_AT);
    memory.set(Buffer.from("payload"), 0x1800);
    expect(imports.request(HEAD_AT, head.length, 0x1800, 7, OUT_AT)).to.equal(HttpResult.OK);
    expect(sent).to.deep.equal([{ head, body: "payload" }]);
    const view = new DataView(memory.buffer);
    const headJson = JSON.stringify({ status: 201, headers: [["content-type", "text/plain"]], url: "https://api.example.com/x" });
    expect([0, 4, 8, 12].map((o) => view.getUint32(OUT_AT + o, true))).to.deep.equal([201, headJson.length, 8, 0]);
    expect(imports.read(HttpPart.BODY, 3, BUF_AT, 100, NREAD_AT)).to.equal(HttpResult.OK);
    expect(view.getUint32(NREAD_AT, true)).to.equal(5);
    expect(Buffer.from(memory.subarray(BUF_AT, BUF_AT + 5)).toString()).to.equal("ated!");
    expect(imports.read(HttpPart.HEAD, 0, BUF_AT, 1000, NREAD_AT)).to.equal(HttpResult.OK);
    expect(Buffer.from(memory.subarray(BUF_AT, BUF_AT + headJson.length)).toString()).to.equal(headJson);
    expect(imports.read(HttpPart.BODY, 100, BUF_AT, 10, NREAD_AT)).to.equal(HttpResult.OK);
    expect(view.getUint32(NREAD_AT, true)).to.equal(0);
  });

  it("regression: a run out of time while waiting for a response ends as a timeout, not as the guest's error and a clean exit", () => {
    // The daemon's timer terminates the worker at the deadline, but on a loaded machine the worker's own
    // deadline came first: the guest got TIMEOUT, carried on and exited 0, and the run was reported EXITED.
    const { main, worker } = createHttpChannel();
    try {
      const host = new WasiHost({
        args: ["raw.wasm"],
        env: new Map(),
        stdin: new Uint8Array(0),
        mounts: [],
        memoryLimitBytes: 1 << 20,
        maxOutputBytes: 1 << 20,
        onStdout: () => undefined,
        onStderr: () => undefined,
        onDenial: () => undefined,
        http: new HttpChannelClient(worker, performance.now() + 200, 200),
      });
      const wasm = scriptedGuest(
        [WASI.fd_write, REQUEST, READ],
        [request(HEAD_AT, head.length)],
        [{ offset: HEAD_AT, bytes: [...Buffer.from(head)] }],
      );
      expect(host.run(new WebAssembly.Module(wasm))).to.deep.equal({
        outcome: "timeout",
        message: "wall-clock limit of 200 ms exceeded while waiting for an HTTP response",
      });
    } finally {
      main.port.close();
    }
  });

  it("the worker's wait for a reply ends at the run's deadline, as TIMEOUT", () => {
    const { main, worker } = createHttpChannel();
    try {
      const started = Date.now();
      const reply = new HttpChannelClient(worker, performance.now() + 250, 250).send(new Uint8Array(2), new Uint8Array(0));
      expect(reply).to.deep.include({ ok: false, result: HttpResult.TIMEOUT });
      expect(Date.now() - started).to.be.within(200, 2000);
    } finally {
      main.port.close();
    }
  });
});
