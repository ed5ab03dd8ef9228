import { expect } from "chai";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Outcome, type ExecuteResponse, type SignedPolicy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { NAMESPACE_LOCK_WAIT_MS } from "../../src/limits.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";
import { checkSurvivalAfterEach, helloWasm, register } from "../helpers/hostile.js";
import { watchMovedDir } from "../helpers/moved-dir-watch.js";
import { makeKey, signed, writePublicKeys } from "../unit/policy-fixtures.js";

/** How long both guests race. */
const RACE_MS = 4000;
const ENOENT = 44;

/**
 * Two guests of one daemon, run concurrently: A has writable /w (a host directory shared with B) and its own
 * writable /o; B has only /w. A moves /w/d to /o/d and back as fast as it can while B creates files in /w/d.
 */
describe("a guest moving a shared directory into its own mount, against a real daemon", function () {
  this.timeout(180_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;
  let root: string;
  let moverId: string;
  let creatorId: string;
  let retimerId: string;
  const authority = makeKey("redirect");

  before(async function () {
    root = await mkdtemp(path.join(tmpdir(), "sandboxd-cross-guest-"));
    const keys = path.join(root, "keys");
    await mkdir(keys);
    await writePublicKeys(keys, [authority]);
    daemon = await startDaemon({
      args: ["--allow-unsigned", "--workers", "2", "--trusted-keys", keys, "--allow-mount-root", root, "--default-timeout-ms", "60000"],
    });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
    const scripts = [
      ["move_dir_loop", (id: string) => (moverId = id)],
      ["create_loop", (id: string) => (creatorId = id)],
      ["retime_forever", (id: string) => (retimerId = id)],
    ] as const;
    for (const [name, set] of scripts) {
      const compiled = await daemon.compile({ input: { $case: "source", value: script(name) } });
      expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
      set(compiled.moduleId);
    }
  });
  checkSurvivalAfterEach(
    () => ({ daemon, pid, helloId }),
    () => rm(root, { recursive: true, force: true }),
  );

  function policy(mounts: { hostPath: string; guestPath: string; writable: boolean }[], timeoutMs = 0): SignedPolicy {
    const s = signed({ expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, mounts, timeoutMs }, authority);
    return { policy: Buffer.from(s.policy), keyId: s.keyId, signature: Buffer.from(s.signature) };
  }

  function json(r: ExecuteResponse): Record<string, unknown> {
    expect(r.outcome, `${r.message} ${r.stderr.toString()}`).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode, r.stderr.toString()).to.equal(0);
    return JSON.parse(r.stdout.toString()) as Record<string, unknown>;
  }

  it("regression: B's creates never land in A's private mount while A has moved the directory there", async function () {
    const shared = path.join(root, "w");
    const privateDir = path.join(root, "o");
    await mkdir(path.join(shared, "d"), { recursive: true });
    await mkdir(privateDir);
    const watch = watchMovedDir(path.join(shared, "d"), privateDir);
    const [a, b] = await Promise.all([
      daemon.execute({
        target: moduleTarget(moverId),
        args: ["/w/d", "/o/d", String(RACE_MS)],
        policy: policy([
          { hostPath: shared, guestPath: "/w", writable: true },
          { hostPath: privateDir, guestPath: "/o", writable: true },
        ]),
      }),
      daemon.execute({
        target: moduleTarget(creatorId),
        args: ["/w/d", String(RACE_MS)],
        policy: policy([{ hostPath: shared, guestPath: "/w", writable: true }]),
      }),
    ]);
    const report = await watch.stop();
    const mover = json(a) as { round_trips: number; failures: number };
    const creator = json(b) as { created: number; errors: Record<string, number> };
    const figures = JSON.stringify({ mover, creator, whileAway: report.whileAway, inside: report.inside, moves: report.moves });
    // The race really ran: A moved the directory many times and every move was seen, B created many files.
    expect(mover.round_trips).to.be.greaterThan(100);
    expect(report.moves, "inotify lost events: the count below would mean nothing").to.equal(2 * mover.round_trips);
    expect(creator.created).to.be.greaterThan(100);
    expect(report.whileAway, `B's files made inside A's /o (${figures}): ${report.samples.join(", ")}`).to.equal(0);
    // B was refused whenever the directory was away: it is simply not in /w then.
    expect(Object.keys(creator.errors), figures).to.deep.equal([String(ENOENT)]);
    expect((await readdir(path.join(shared, "d"))).length).to.equal(creator.created);
    expect(await readdir(privateDir)).to.deep.equal([]);
  });

  it("regression: a guest killed at its time limit in the middle of a file mutation does not leave other guests' renames blocked", async function () {
    // Changing a file's time holds the namespace lock almost all the time, and a terminated thread runs no finally
    // block: unless the pool releases what the dead thread held, the next rename waits out the lock and fails (EBUSY).
    const dir = await mkdtemp(path.join(root, "killed-"));
    await mkdir(path.join(dir, "a"));
    const mounts = [{ hostPath: dir, guestPath: "/w", writable: true }];
    const killed = await daemon.execute({ target: moduleTarget(retimerId), args: ["/w/f"], policy: policy(mounts, 500) });
    expect(killed.outcome, killed.message).to.equal(Outcome.OUTCOME_TIMEOUT);
    const started = performance.now();
    const next = json(await daemon.execute({ target: moduleTarget(moverId), args: ["/w/a", "/w/b", "1"], policy: policy(mounts) })) as {
      round_trips: number;
      failures: number;
    };
    expect(next.failures, "the rename waited out the lock and failed with EBUSY").to.equal(0);
    expect(next.round_trips).to.be.at.least(1);
    expect(performance.now() - started).to.be.below(NAMESPACE_LOCK_WAIT_MS);
  });
});
