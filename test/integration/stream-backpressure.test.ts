import { Metadata } from "@grpc/grpc-js";
import { expect } from "chai";
import { readFile } from "node:fs/promises";
import { ExecuteRequest, Outcome, type ExecuteEvent } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { DEFAULT_MAX_OUTPUT_BYTES } from "../../src/limits.js";
import { buildModule, call as callFn, DROP, forever, i32, WASI } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { openUnreadCall, type UnreadCall } from "../helpers/raw-http2.js";

/** Size of each of the flooding guest's writes. */
const BLOCK_BYTES = 64 * 1024;
/** Streams opened and never read in the memory test. */
const UNREAD_STREAMS = 20;
/**
 * Growth of the daemon's RSS allowed while 20 floods go unread. Before back-pressure it grew by
 * ~430 MB (each stream buffered its whole 16 MiB); with it, each running guest has at most one
 * stream window untaken (about 13 MB in all with 4 workers).
 */
const MAX_RSS_GROWTH_BYTES = 64 * 1024 * 1024;

/** A guest that writes 64 KiB blocks of 'x' to stdout until the output cap stops it. */
function floodWasm(): Uint8Array {
  const iovec = BLOCK_BYTES;
  return buildModule({
    imports: [WASI.fd_write],
    memory: { min: 2 },
    data: [
      { offset: 0, bytes: new Array<number>(BLOCK_BYTES).fill(0x78) },
      // iovec { buf: 0, len: BLOCK_BYTES }
      { offset: iovec, bytes: [0, 0, 0, 0, ...[0, 0, 1, 0]] },
    ],
    funcs: [{ params: [], results: [], body: forever([...i32(1), ...i32(iovec), ...i32(1), ...i32(iovec + 8), ...callFn(0), ...DROP]) }],
  });
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  return Number(kb?.[1] ?? 0) * 1024;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** StreamOutput to readers that are slow or never read: the guest waits, the daemon does not buffer. */
describe("StreamOutput back-pressure", function () {
  this.timeout(180_000);
  let daemon: TestDaemon;
  let pid: number;
  let floodId: string;
  let helloId: string;

  beforeEach(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "4", "--default-timeout-ms", "60000"] });
    pid = daemon.process.pid!;
    floodId = await register(daemon, floodWasm());
    helloId = await register(daemon, helloWasm());
  });
  afterEach(async function () {
    await daemon?.stop();
  });

  it("a slowly read flood arrives complete and in order, and ends at the output cap", async function () {
    const stream = daemon.client.streamOutput(executeRequest({ target: moduleTarget(floodId) }), new Metadata());
    let received = 0;
    let wrong = 0;
    let outcome: Outcome | undefined;
    let sinceNap = 0;
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (e: ExecuteEvent) => {
        if (e.event?.$case === "stdout") {
          const bytes = e.event.value;
          for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0x78) wrong++;
          received += bytes.length;
          sinceNap += bytes.length;
          if (sinceNap >= 1024 * 1024) {
            // A slow reader: a pause after every MiB.
            sinceNap = 0;
            stream.pause();
            setTimeout(() => stream.resume(), 30);
          }
        } else if (e.event?.$case === "finished") {
          outcome = e.event.value.outcome;
        }
      });
      stream.on("end", () => resolve());
      stream.on("error", reject);
    });
    expect(outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
    expect(received).to.equal(DEFAULT_MAX_OUTPUT_BYTES);
    expect(wrong).to.equal(0);
  });

  it(`regression: ${UNREAD_STREAMS} never-read floods keep the daemon's memory bounded (RSS grew ~430 MB)`, async function () {
    await sleep(500);
    const baseline = await rssBytes(pid);
    const request = ExecuteRequest.encode(ExecuteRequest.fromPartial({ target: moduleTarget(floodId) })).finish();
    const calls: UnreadCall[] = [];
    for (let i = 0; i < UNREAD_STREAMS; i++)
      calls.push(openUnreadCall(daemon.socketPath, "/sandbox.v1.SandboxService/StreamOutput", request));
    let peak = baseline;
    for (let t = 0; t < 30; t++) {
      await sleep(100);
      peak = Math.max(peak, await rssBytes(pid));
    }
    // Meanwhile the other callers are served (the queue drains as these runs end).
    for (const c of calls) c.close();
    const growth = peak - baseline;
    expect(growth, `daemon RSS grew by ${(growth / 1048576).toFixed(0)} MiB`).to.be.lessThan(MAX_RSS_GROWTH_BYTES);
    await expectStillServing(daemon, pid, helloId);
  });
});
