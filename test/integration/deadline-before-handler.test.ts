/**
 * Found by the 10-minute soak: a unary call whose deadline passed (or which the client cancelled) before
 * grpc-js had invoked our handler got no 'cancelled' event, so its guest ran on to the policy's own
 * timeout, holding a worker and its mounts' fds long after the caller had gone. A client sending
 * already-expired calls could keep every worker busy.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { mkdir, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect } from "../../src/grpc/client.js";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, forever } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { helloWasm, register } from "../helpers/hostile.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

/** Calls sent with a deadline already past: enough that some reach the daemon before their cancellation does. */
const EXPIRED_CALLS = 300;
/** Sent at once. */
const EXPIRED_CONCURRENCY = 8;
/** The guests' own limit: far beyond the test, so a guest still running after the calls is the bug. */
const GUEST_TIMEOUT_MS = 120_000;
/** Time the daemon gets to end what it started for calls that are gone. */
const SETTLE_MS = 3_000;

describe("calls whose deadline passed before the handler ran", function () {
  this.timeout(120_000);
  let tmp: { path: string; remove: () => Promise<void> };
  let daemon: TestDaemon;
  let key: TestKey;
  let loopId: string;
  let helloId: string;
  let data: string;

  before(async function () {
    tmp = await tempDir("expired-deadline");
    const keys = join(tmp.path, "keys");
    data = join(tmp.path, "data");
    await mkdir(keys);
    await mkdir(data);
    key = makeKey("authority");
    await writePublicKeys(keys, [key]);
    daemon = await startDaemon({ args: ["--trusted-keys", keys, "--allow-mount-root", data, "--workers", "2"] });
    loopId = await register(daemon, buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([]) }] }));
    helloId = await register(daemon, helloWasm());
  });
  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  it("regression: a guest whose call expired before its handler ran does not run on to its own timeout", async function () {
    const policy = (): ReturnType<typeof wire> =>
      wire(
        signed(
          {
            policyId: "expired",
            expiresAtUnix: Math.floor(Date.now() / 1000) + 600,
            timeoutMs: GUEST_TIMEOUT_MS,
            mounts: [{ hostPath: data, guestPath: "/data", writable: false }],
          },
          key,
        ),
      );
    const pid = daemon.process.pid!;
    const fdsBefore = (await readdir(`/proc/${pid}/fd`)).length;
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      let next = 0;
      const lane = async (): Promise<void> => {
        while (next++ < EXPIRED_CALLS) {
          const e = await client.execute({ target: moduleTarget(loopId), policy: policy() }, { deadline: Date.now() - 1000 }).then(
            () => undefined,
            (err: ServiceError) => err,
          );
          expect(e?.code).to.equal(status.DEADLINE_EXCEEDED);
        }
      };
      await Promise.all(Array.from({ length: EXPIRED_CONCURRENCY }, lane));
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const targets = await Promise.all((await readdir(`/proc/${pid}/fd`)).map((n) => readlink(`/proc/${pid}/fd/${n}`).catch(() => "")));
      const mountFds = targets.filter((t) => t.startsWith(data));
      expect(mountFds, "descriptors of guests whose calls are gone").to.deep.equal([]);
      expect((await readdir(`/proc/${pid}/fd`)).length).to.be.at.most(fdsBefore + 2);
      // Both workers free: an ordinary run does not wait behind guests nobody is waiting for.
      const started = performance.now();
      const r = await client.execute({ target: moduleTarget(helloId), policy: policy() }, { deadline: Date.now() + 10_000 });
      expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
      expect(performance.now() - started).to.be.lessThan(10_000);
    } finally {
      client.close();
    }
  });
});
