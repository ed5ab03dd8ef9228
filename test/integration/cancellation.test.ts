import { status, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { performance } from "node:perf_hooks";
import { connect } from "../../src/grpc/client.js";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";

describe("cancellation and deadlines free the worker", function () {
  let daemon: TestDaemon;
  let loopId: string;
  let exitId: string;

  before(async function () {
    // One worker: if a cancelled guest kept running, the next run would wait for the 60 s timeout.
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--default-timeout-ms", "60000"] });
    loopId = (await daemon.compile({ input: { $case: "source", value: script("infinite_loop") } })).moduleId;
    exitId = (await daemon.compile({ input: { $case: "source", value: script("exit_42") } })).moduleId;
  });
  after(async function () {
    await daemon?.stop();
  });

  it("a client deadline ends the call with DEADLINE_EXCEEDED and terminates the guest", async function () {
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      const error = await client.execute({ target: moduleTarget(loopId) }, { deadline: Date.now() + 500 }).then(
        () => undefined,
        (e: ServiceError) => e,
      );
      expect(error?.code).to.equal(status.DEADLINE_EXCEEDED);
      const started = performance.now();
      const next = await daemon.execute({ target: moduleTarget(exitId) });
      expect(next.exitCode).to.equal(42);
      // Functional bound, far from any timing target: the worker was freed, not left for the 60 s limit.
      expect(performance.now() - started).to.be.lessThan(30_000);
    } finally {
      client.close();
    }
  });

  it("a cancelled stream terminates the guest too", async function () {
    const call = daemon.client.streamOutput({
      target: moduleTarget(loopId),
      stdin: Buffer.alloc(0),
      args: [],
      env: new Map(),
      policy: undefined,
    });
    const cancelled = new Promise<ServiceError>((resolve) => call.on("error", resolve));
    call.on("data", () => undefined);
    await new Promise((r) => setTimeout(r, 300));
    call.cancel();
    expect((await cancelled).code).to.equal(status.CANCELLED);
    const next = await daemon.execute({ target: moduleTarget(exitId) });
    expect(next.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(next.exitCode).to.equal(42);
  });

  it("SIGTERM cancels a running guest after the grace period and still exits 0", async function () {
    this.timeout(60_000);
    const own = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--default-timeout-ms", "60000"] });
    const id = (await own.compile({ input: { $case: "source", value: script("infinite_loop") } })).moduleId;
    const running = own.execute({ target: moduleTarget(id) }).then(
      (r) => r,
      (e: ServiceError) => e,
    );
    await new Promise((r) => setTimeout(r, 300));
    own.process.kill("SIGTERM");
    const outcome = await running;
    const code = await own.stop();
    expect(code).to.equal(0);
    // Either the response made it out (CANCELLED outcome) or the connection closed first.
    if ("outcome" in outcome) expect(outcome.outcome).to.equal(Outcome.OUTCOME_CANCELLED);
    else expect([status.UNAVAILABLE, status.CANCELLED]).to.include(outcome.code);
  });
});
