import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { ExecuteRequest, Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, DROP, forever, i64 } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { openUnreadCall } from "../helpers/raw-http2.js";

const MIB = 1024 * 1024;

function loopWasm(): Uint8Array {
  return buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([...i64(1n), ...DROP]) }] });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Admission control: how much work may wait, and how many bytes may be held for it. */
describe("admission control", function () {
  this.timeout(120_000);
  let daemon: TestDaemon | undefined;

  afterEach(async function () {
    await daemon?.stop();
    daemon = undefined;
  });

  it("--max-queued-executions refuses the next call at once with EXECUTION_QUEUE_FULL", async function () {
    daemon = await startDaemon({
      args: ["--allow-unsigned", "--workers", "1", "--max-queued-executions", "2", "--default-timeout-ms", "3000"],
    });
    const loopId = await register(daemon, loopWasm());
    const running = [
      daemon.execute({ target: moduleTarget(loopId) }),
      daemon.execute({ target: moduleTarget(loopId) }),
      daemon.execute({ target: moduleTarget(loopId) }),
    ];
    await sleep(300);
    const refused = await rejection(daemon.execute({ target: moduleTarget(loopId) }));
    expect(refused.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(refused.reason).to.equal("EXECUTION_QUEUE_FULL");
    const results = await Promise.all(running);
    expect(results.map((r) => r.outcome)).to.deep.equal([Outcome.OUTCOME_TIMEOUT, Outcome.OUTCOME_TIMEOUT, Outcome.OUTCOME_TIMEOUT]);
  });

  it("time spent queued counts against the caller's deadline, never against the guest's timeout", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--default-timeout-ms", "1000"] });
    const loopId = await register(daemon, loopWasm());
    const helloId = await register(daemon, helloWasm());
    const blocker = daemon.execute({ target: moduleTarget(loopId) });
    await sleep(100);
    // It waits ~0.9 s for the one worker, then gets its whole 1 s budget once it runs.
    const queued = await daemon.execute({ target: moduleTarget(helloId) });
    expect(queued.outcome, queued.message).to.equal(Outcome.OUTCOME_EXITED);
    expect((await blocker).outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
    // A caller whose deadline passes while it waits is told so, and its run never starts.
    const again = daemon.execute({ target: moduleTarget(loopId) });
    await sleep(100);
    const { connect } = await import("../../src/grpc/client.js");
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      const late = await client.execute({ target: moduleTarget(helloId) }, { deadline: Date.now() + 300 }).then(
        () => status.OK,
        (e: { code: number }) => e.code,
      );
      expect(late).to.equal(status.DEADLINE_EXCEEDED);
    } finally {
      client.close();
    }
    await again;
  });

  it("regression: queued stdin is bounded in bytes, not only in count (30 queued 16 MiB stdins took the daemon from 90 to 1089 MB)", async function () {
    daemon = await startDaemon({
      args: ["--allow-unsigned", "--workers", "1", "--max-buffered-bytes", String(64 * MIB), "--default-timeout-ms", "1500"],
    });
    const pid = daemon.process.pid!;
    const loopId = await register(daemon, loopWasm());
    const helloId = await register(daemon, helloWasm());
    const stdin = Buffer.alloc(15 * MIB, 1);
    const calls = Array.from({ length: 30 }, () =>
      daemon!.execute({ target: moduleTarget(loopId), stdin }).then(
        (r) => ({ outcome: r.outcome, code: status.OK }),
        (e: { code: number }) => ({ outcome: undefined, code: e.code }),
      ),
    );
    const results = await Promise.all(calls);
    // 64 MiB holds four 15 MiB inputs; every other call is refused at once, and the four run.
    expect(results.filter((r) => r.code === status.RESOURCE_EXHAUSTED)).to.have.length(26);
    expect(results.filter((r) => r.outcome === Outcome.OUTCOME_TIMEOUT)).to.have.length(4);
    await expectStillServing(daemon, pid, helloId);
  });

  it("a guest whose stream is never read waits, then ends at its time limit and frees its worker", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--default-timeout-ms", "1500"] });
    const pid = daemon.process.pid!;
    const helloId = await register(daemon, helloWasm());
    const flood = `use std::io::Write; fn main() { let b = [b'y'; 65536]; let mut o = std::io::stdout(); loop { o.write_all(&b).unwrap(); } }`;
    const floodId = (await daemon.compile({ input: { $case: "source", value: flood } })).moduleId;
    const unread = openUnreadCall(
      daemon.socketPath,
      "/sandbox.v1.SandboxService/StreamOutput",
      ExecuteRequest.encode(ExecuteRequest.fromPartial({ target: moduleTarget(floodId) })).finish(),
    );
    try {
      await sleep(200);
      // The one worker is held by the waiting guest until its 1.5 s run out; then this call runs.
      await expectStillServing(daemon, pid, helloId);
    } finally {
      unread.close();
    }
  });
});
