import { status, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "../../src/grpc/client.js";
import { Outcome, type SignedPolicy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, forever, i64, DROP } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { makeKey, signed, wire, writePublicKeys } from "../unit/policy-fixtures.js";

/** Racy endings are repeated this often: before the fix about half of them aborted the daemon. */
const ITERATIONS = 50;
/** Open fds the daemon may have above its baseline after the storm settles (a gRPC connection or two). */
const FD_TOLERANCE = 4;
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
    loopId = await register(daemon, buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([...i64(1n), ...DROP]) }] }));
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
      const call = daemon.client.streamOutput({ target: moduleTarget(loopId), stdin: Buffer.alloc(0), args: [], env: new Map(), policy: policy(60_000) });
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
        const error = await client.execute({ target: moduleTarget(loopId), policy: policy(60_000) }, { deadline: Date.now() + 100 + (i % 5) * 20 }).then(
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
