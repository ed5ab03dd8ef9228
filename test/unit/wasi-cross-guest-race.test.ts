import { expect } from "chai";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { processNamespaceLock } from "../../src/runtime/wasi/namespace-lock.js";
import type { WasiMount } from "../../src/runtime/wasi/types.js";
import { guestWasmPath, startGuestWorker } from "../fixtures/wasi/guest.js";
import { watchMovedDir } from "../helpers/moved-dir-watch.js";

/** How long both guests race, per operation. */
const RACE_MS = 1500;
/** Names the order-taking operations (unlink, rmdir) find ready in the directory. */
const PREPARED = 3000;
const ENOENT = 44;
const ENOTCAPABLE = 76;

/** What `probe mutate-loop` printed. */
interface MutateReport {
  readonly done: number;
  readonly errors: Map<number, number>;
  readonly refused: string[];
}

function parseMutate(stdout: string): MutateReport {
  const m = /^ok done=(\d+) errors=(\S*) refused=(\S*)\n$/.exec(stdout);
  if (m === null) throw new Error(`unexpected guest output: ${stdout}`);
  const errors = new Map<number, number>();
  for (const pair of (m[2] as string).split(",").filter((p) => p !== "")) {
    const [errno, count] = pair.split(":").map(Number);
    errors.set(errno as number, count as number);
  }
  return { done: Number(m[1]), errors, refused: (m[3] as string).split(",").filter((n) => n !== "") };
}

/**
 * Guests of one process run in different worker threads: A (writable /w, shared, and its own writable /o)
 * moves /w/d to /o/d and back in a loop while B (only /w) mutates inside /w/d. Whatever B does must act in
 * /w: every event inotify reports from inside d while d sat in /o is a violation.
 */
describe("WASI: a guest moving a shared directory into its own mount while another guest works in it", function () {
  this.timeout(120_000);
  let root: string;
  let shared: string;
  let privateDir: string;
  let wasmPath: string;
  const lock = processNamespaceLock();
  const mountsOfA = (): WasiMount[] => [
    { hostPath: shared, guestPath: "/w", writable: true },
    { hostPath: privateDir, guestPath: "/o", writable: true },
  ];
  const mountsOfB = (): WasiMount[] => [{ hostPath: shared, guestPath: "/w", writable: true }];

  before(() => {
    wasmPath = guestWasmPath("probe");
  });
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-cross-guest-race-"));
    shared = join(root, "w");
    privateDir = join(root, "o");
    const d = join(shared, "d");
    mkdirSync(d, { recursive: true });
    mkdirSync(privateDir);
    for (const name of ["src", "r0", "f"]) writeFileSync(join(d, name), "");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  function prepare(op: string): void {
    const d = join(shared, "d");
    for (let i = 0; i < PREPARED; i++) {
      if (op === "unlink") writeFileSync(join(d, `u${i}`), "");
      if (op === "rmdir") mkdirSync(join(d, `v${i}`));
    }
  }

  const ops = [
    "create",
    "create-in-held-dir",
    "mkdir",
    "symlink",
    "link",
    "rename",
    "unlink",
    "rmdir",
    "truncate",
    "set-times",
    "write-fd",
    "set-len-fd",
    "allocate-fd",
    "set-times-fd",
  ];
  for (const op of ops) {
    it(`regression: B's ${op} never acts inside A's private mount`, async () => {
      prepare(op);
      const watch = watchMovedDir(join(shared, "d"), privateDir);
      const a = startGuestWorker({
        wasmPath,
        args: ["move-loop", "/w/d", "/o/d", String(RACE_MS)],
        mounts: mountsOfA(),
        namespaceLock: lock,
      });
      const b = startGuestWorker({
        wasmPath,
        args: ["mutate-loop", op, "/w/d", "d", String(RACE_MS)],
        mounts: mountsOfB(),
        namespaceLock: lock,
      });
      const [ra, rb] = await Promise.all([a.done, b.done]);
      await Promise.all([a.worker.terminate(), b.worker.terminate()]);
      const report = await watch.stop();
      expect(ra.outcome, ra.stdout).to.equal("exited");
      expect(rb.outcome, rb.stdout).to.equal("exited");
      const roundTrips = Number(/^ok (\d+)\n$/.exec(ra.stdout)?.[1]);
      const mutate = parseMutate(rb.stdout);
      const figures = JSON.stringify({
        roundTrips,
        done: mutate.done,
        errors: [...mutate.errors],
        whileAway: report.whileAway,
        inside: report.inside,
      });
      // The race really ran both ways.
      expect(roundTrips).to.be.greaterThan(50);
      expect(report.moves, "inotify lost events: the count below would mean nothing").to.equal(2 * roundTrips);
      expect(mutate.done).to.be.greaterThan(0);
      expect(report.whileAway, `B changed things inside A's /o (${figures}): ${report.samples.join(", ")}`).to.equal(0);
      // While d was away B was told so: not found by a path, or refused (with a denial) through a held file.
      expect(mutate.errors.size, `B never ran while d was away: ${figures}`).to.be.greaterThan(0);
      for (const errno of mutate.errors.keys()) expect([ENOENT, ENOTCAPABLE]).to.include(errno);
      if (op.endsWith("-fd") || op === "create-in-held-dir") {
        expect(mutate.errors.get(ENOTCAPABLE) ?? 0).to.be.greaterThan(0);
        const why =
          op === "create-in-held-dir" ? /directory descriptor was moved outside the mount/ : /moved outside the mount after it was opened/;
        expect(
          rb.denials.some((x) => why.test(x)),
          rb.denials.slice(0, 3).join("\n"),
        ).to.equal(true);
      }
    });
  }

  it("a process outside the daemon moving the directory away mid-create: a refused create leaves no file behind", async () => {
    // The lock orders guests only; another process can still move d between B's check and its create.
    const outside = join(root, "outside");
    mkdirSync(outside);
    const mover = new Worker(
      `const { renameSync } = require("node:fs");
       const { workerData: w } = require("node:worker_threads");
       const end = Date.now() + w.ms;
       while (Date.now() < end) { renameSync(w.from, w.to); renameSync(w.to, w.from); }`,
      { eval: true, workerData: { from: join(shared, "d"), to: join(outside, "d"), ms: RACE_MS } },
    );
    const moverDone = new Promise((resolve, reject) => {
      mover.once("exit", resolve);
      mover.once("error", reject);
    });
    const b = startGuestWorker({
      wasmPath,
      args: ["mutate-loop", "create", "/w/d", "d", String(RACE_MS)],
      mounts: mountsOfB(),
      namespaceLock: lock,
    });
    const rb = await b.done;
    await b.worker.terminate();
    await moverDone;
    const mutate = parseMutate(rb.stdout);
    expect(mutate.done).to.be.greaterThan(0);
    for (const name of mutate.refused) expect(existsSync(join(shared, "d", name)), `${name} was refused but left behind`).to.equal(false);
    const undone = rb.denials.filter((x) => /created there was removed/.test(x)).length;
    expect(undone).to.be.at.most(mutate.refused.length);
  });
});
