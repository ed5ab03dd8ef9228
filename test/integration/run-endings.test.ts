import { status, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect, executeRequest } from "../../src/grpc/client.js";
import { ExecuteRequest, Outcome, type SignedPolicy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, forever, i64, DROP } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { sendCancelledCalls } from "../helpers/raw-http2.js";
import { makeKey, signed, wire, writePublicKeys } from "../unit/policy-fixtures.js";

/** Racy endings are repeated this often: before the fix about half of them aborted the daemon. */
const ITERATIONS = 50;
/** Open fds the daemon may have above its baseline after the storm settles (a gRPC connection or two). */
const FD_TOLERANCE = 4;
/** Unary Executes cancelled by the client as they are sent (same tick, next tick, 0-2 ms later), in one storm. */
const SAME_TICK_CANCELS = 400;
/** Policy time of each run after the storm: long enough that two of them in turn overrun the client's deadline. */
const PROBE_RUN_MS = 3_000;
/** Slack for the probe runs beyond their own time: worker boots after the storm, a loaded machine. */
const PROBE_SLACK_MS = 2_500;
/** How long to wait for replaced workers to finish starting before counting fds. */
const SETTLE_MS = 1_500;

function openFds(pid: number): Promise<number> {
  return readdir(`/proc/${pid}/fd`).then((fds) => fds.length);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs that end early (timeout, client cancel, deadline) while the guest holds host fds for its mounts. */
describe("runs that end early while holding mounts", function () {
  this.timeout(300_000);
  let daemon: TestDaemon;
  let pid: number;
  let root: string;
  let keys: string;
  let loopId: string;
  let helloId: string;
  const authority = makeKey("endings");

  before(async function () {
    root = await mkdtemp(path.join(tmpdir(), "sandboxd-endings-"));
    keys = path.join(root, "keys");
    await mkdir(keys);
    await writePublicKeys(keys, [authority]);
    await mkdir(path.join(root, "ro"));
    await mkdir(path.join(root, "rw"));
    await writeFile(path.join(root, "ro", "f"), "x");
  });
  // A daemon per test: one that an ending aborted must not fail the tests after it.
  beforeEach(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "2", "--trusted-keys", keys, "--allow-mount-root", root] });
    pid = daemon.process.pid!;
    loopId = await register(
      daemon,
      buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([...i64(1n), ...DROP]) }] }),
    );
    helloId = await register(daemon, helloWasm());
  });
  afterEach(async function () {
    await daemon?.stop();
  });
  after(async function () {
    await rm(root, { recursive: true, force: true });
  });

  function policy(timeoutMs: number): SignedPolicy {
    return wire(
      signed(
        {
          expiresAtUnix: Math.floor(Date.now() / 1000) + 3600,
          timeoutMs,
          mounts: [
            { hostPath: path.join(root, "ro"), guestPath: "/ro", writable: false },
            { hostPath: path.join(root, "rw"), guestPath: "/rw", writable: true },
          ],
        },
        authority,
      ),
    );
  }

  async function expectFdsSettled(baseline: number): Promise<void> {
    await sleep(SETTLE_MS);
    const after = await openFds(pid);
    expect(after, `open fds went from ${baseline} to ${after}`).to.be.at.most(baseline + FD_TOLERANCE);
  }

  it(`regression: ${ITERATIONS} timeouts of a guest holding mounts never abort the daemon (fds were closed twice)`, async function () {
    const baseline = await openFds(pid);
    for (let i = 0; i < ITERATIONS; i++) {
      const r = await daemon.execute({ target: moduleTarget(loopId), policy: policy(150) });
      expect(r.outcome, `run ${i}: ${r.message}`).to.equal(Outcome.OUTCOME_TIMEOUT);
    }
    await expectStillServing(daemon, pid, helloId);
    await expectFdsSettled(baseline);
  });

  it(`regression: ${ITERATIONS} cancelled streams of a guest holding mounts never abort the daemon`, async function () {
    const baseline = await openFds(pid);
    for (let i = 0; i < ITERATIONS; i++) {
      const call = daemon.client.streamOutput({
        target: moduleTarget(loopId),
        stdin: Buffer.alloc(0),
        args: [],
        env: new Map(),
        policy: policy(60_000),
      });
      const ended = new Promise<ServiceError>((resolve) => call.on("error", resolve));
      const started = new Promise<void>((resolve) => call.once("data", () => resolve()));
      call.on("data", () => undefined);
      await started;
      await sleep(20 + (i % 5) * 10);
      call.cancel();
      expect((await ended).code).to.equal(status.CANCELLED);
    }
    await expectStillServing(daemon, pid, helloId);
    await expectFdsSettled(baseline);
  });

  it(`regression: ${ITERATIONS} passed deadlines of a guest holding mounts never abort the daemon`, async function () {
    const baseline = await openFds(pid);
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      for (let i = 0; i < ITERATIONS; i++) {
        const error = await client
          .execute({ target: moduleTarget(loopId), policy: policy(60_000) }, { deadline: Date.now() + 100 + (i % 5) * 20 })
          .then(
            () => undefined,
            (e: ServiceError) => e,
          );
        expect(error?.code).to.equal(status.DEADLINE_EXCEEDED);
      }
    } finally {
      client.close();
    }
    await expectStillServing(daemon, pid, helloId);
    await expectFdsSettled(baseline);
  });

  it("regression: 200 calls cancelled while replacement workers boot leak no descriptors (the module loader's files leaked)", async function () {
    const baseline = await openFds(pid);
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      for (let i = 0; i < 200; i++) {
        // Each ends by deadline, so its worker is replaced; the next call lands while that replacement boots.
        await client.execute({ target: moduleTarget(loopId) }, { deadline: Date.now() + 5 + (i % 4) * 5 }).then(
          () => undefined,
          () => undefined,
        );
      }
    } finally {
      client.close();
    }
    await expectStillServing(daemon, pid, helloId);
    await expectFdsSettled(baseline);
  });

  it(`regression: ${SAME_TICK_CANCELS} unary Executes cancelled as they are sent leave no guest running to its timeout`, async function () {
    const request = ExecuteRequest.encode(executeRequest({ target: moduleTarget(loopId), policy: policy(120_000) })).finish();
    await sendCancelledCalls(daemon.socketPath, "/sandbox.v1.SandboxService/Execute", request, SAME_TICK_CANCELS);
    // As many runs as workers, at once: a guest the storm left running holds a worker for its 120 s, and
    // the two then run in turn, past the deadline.
    const prober = connect(`unix://${daemon.socketPath}`);
    try {
      const deadline = Date.now() + PROBE_RUN_MS + PROBE_SLACK_MS;
      const probes = [0, 1].map(() => prober.execute({ target: moduleTarget(loopId), policy: policy(PROBE_RUN_MS) }, { deadline }));
      for (const r of await Promise.all(probes)) expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_TIMEOUT);
    } finally {
      prober.close();
    }
  });

  it("regression: a short run right after a timeout is not timed out while its worker is still booting", async function () {
    const quick = buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: [] }] });
    const quickId = await register(daemon, quick);
    let falseTimeouts = 0;
    for (let i = 0; i < 10; i++) {
      // Two workers: two timeouts replace both, so the next run must wait for a booting one.
      await Promise.all([
        daemon.execute({ target: moduleTarget(loopId), policy: policy(50) }),
        daemon.execute({ target: moduleTarget(loopId), policy: policy(50) }),
      ]);
      const r = await daemon.execute({ target: moduleTarget(quickId), policy: policy(60) });
      if (r.outcome === Outcome.OUTCOME_TIMEOUT) falseTimeouts++;
      else expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    }
    expect(falseTimeouts).to.equal(0);
  });
});
