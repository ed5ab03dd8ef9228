import { expect } from "chai";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import {
  acquireExclusive,
  acquireShared,
  createNamespaceLock,
  namespaceLockHolder,
  releaseExclusive,
  releaseNamespaceLockHeldBy,
  releaseShared,
} from "../../src/runtime/wasi/namespace-lock.js";
import type { LockJob, LockReport } from "../fixtures/wasi/lock-worker.js";

const LOCK_WORKER = fileURLToPath(new URL("../fixtures/wasi/lock-worker.js", import.meta.url));
const ME = namespaceLockHolder();

function start(job: LockJob): { worker: Worker; message: Promise<unknown> } {
  const worker = new Worker(LOCK_WORKER, { workerData: job });
  const message = new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  return { worker, message };
}

async function hammer(lock: Int32Array, roles: ("reader" | "writer")[], ms: number): Promise<LockReport[]> {
  const state = new Int32Array(new SharedArrayBuffer(8));
  const runs = roles.map((role) => start({ lock, state, role, ms, timeoutMs: 5_000 }));
  const reports = (await Promise.all(runs.map((r) => r.message))) as LockReport[];
  await Promise.all(runs.map((r) => r.worker.terminate()));
  return reports;
}

/** The lock that orders renames against path operations across worker threads (see namespace-lock.ts). */
describe("WASI namespace lock", function () {
  this.timeout(60_000);

  it("readers share it, a writer has it alone, across threads", async () => {
    const reports = await hammer(createNamespaceLock(), ["reader", "reader", "writer", "writer"], 1500);
    for (const r of reports) {
      expect(r.violations).to.equal(0);
      expect(r.timeouts).to.equal(0);
      expect(r.acquisitions).to.be.greaterThan(10);
    }
  });

  it("a writer looping as fast as it can does not starve a reader, nor the reverse", async () => {
    const [reader, writer] = await hammer(createNamespaceLock(), ["reader", "writer"], 1500);
    expect(reader!.timeouts).to.equal(0);
    expect(writer!.timeouts).to.equal(0);
    expect(reader!.acquisitions).to.be.greaterThan(1000);
    expect(writer!.acquisitions).to.be.greaterThan(1000);
    // Each waits at most for the other's hold (microseconds) plus a thread wake-up, never for a streak of holds.
    expect(reader!.maxWaitMs).to.be.below(250);
    expect(writer!.maxWaitMs).to.be.below(250);
  });

  for (const role of ["hold-shared", "hold-exclusive"] as const) {
    it(`a thread terminated while it holds the lock (${role}) blocks others only until it is released for it`, async () => {
      const lock = createNamespaceLock();
      const { worker, message } = start({ lock, state: new Int32Array(new SharedArrayBuffer(8)), role, ms: 0, timeoutMs: 1_000 });
      expect(await message).to.deep.equal({ held: true });
      // Blocked, but only for the time asked: an error for the guest, not a hang.
      const asked = performance.now();
      expect(acquireExclusive(lock, ME, 200)).to.equal(false);
      expect(performance.now() - asked).to.be.within(150, 1_000);
      if (role === "hold-exclusive") expect(acquireShared(lock, ME, 200)).to.equal(-1);
      const holder = namespaceLockHolder(worker.threadId);
      await worker.terminate();
      releaseNamespaceLockHeldBy(lock, holder);
      expect(acquireExclusive(lock, ME, 200)).to.equal(true);
      releaseExclusive(lock, ME);
      const slot = acquireShared(lock, ME, 200);
      expect(slot).to.be.at.least(0);
      releaseShared(lock, slot);
    });
  }

  it("a writer that times out waiting for readers leaves the lock free for the next one", () => {
    const lock = createNamespaceLock();
    const other = namespaceLockHolder(10_000);
    const slot = acquireShared(lock, other, 100);
    expect(acquireExclusive(lock, ME, 100)).to.equal(false);
    // Readers were never shut out for good by the writer that gave up.
    const second = acquireShared(lock, ME, 100);
    expect(second).to.be.at.least(0);
    releaseShared(lock, second);
    releaseShared(lock, slot);
    expect(acquireExclusive(lock, ME, 100)).to.equal(true);
    releaseExclusive(lock, ME);
  });
});
