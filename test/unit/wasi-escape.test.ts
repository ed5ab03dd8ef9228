import { expect } from "chai";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { Worker } from "node:worker_threads";
import { Errno } from "../../src/runtime/wasi/abi.js";
import { loadGuest, runGuest, type GuestRun } from "../fixtures/wasi/guest.js";

const SECRET = "OUTSIDE SECRET";

/**
 * One test per way out of a mount. Each lays out, in a fresh mkdtemp root:
 *   root/secret.txt   a file outside the mount the guest must never read
 *   root/mount/       the only directory granted, as guest /data (writable unless said)
 * and checks both the errno the guest saw and that nothing outside was read or created.
 */
describe("WASI host: filesystem grants cannot be escaped", function () {
  this.timeout(120_000);
  let probe: WebAssembly.Module;
  let root: string;
  let mount: string;

  before(() => {
    probe = loadGuest("probe");
  });
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-wasi-escape-"));
    mount = join(root, "mount");
    mkdirSync(join(mount, "sub"), { recursive: true });
    writeFileSync(join(mount, "sub", "inside.txt"), "inside");
    writeFileSync(join(root, "secret.txt"), SECRET);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const run = (...args: string[]): GuestRun => runGuest(probe, args, { mounts: [{ hostPath: mount, guestPath: "/data", writable: true }] });

  const expectRefused = (r: GuestRun, errno: number = Errno.NOTCAPABLE): void => {
    expect(r.stdout).to.equal(`err ${errno}\n`);
    expect(r.stdout).not.to.contain(SECRET);
  };

  it("`..` cannot climb out of the mount (read, write, mkdir)", () => {
    const r = run("read", "/data/../secret.txt");
    expectRefused(r);
    expect(r.denials).to.deep.include({
      operation: "path_open",
      path: "/data/../secret.txt",
      reason: "`..` leads outside the granted directory",
    });
    expectRefused(run("read", "/data/sub/../../secret.txt"));
    expectRefused(run("write", "/data/../canary", "x"));
    expectRefused(run("mkdir", "/data/sub/../../canary-dir"));
    expect(existsSync(join(root, "canary"))).to.equal(false);
    expect(existsSync(join(root, "canary-dir"))).to.equal(false);
    // `..` that stays inside is fine.
    expect(run("read", "/data/sub/../sub/inside.txt").stdout).to.equal("ok inside\n");
  });

  it("absolute paths outside every mount reach nothing", () => {
    const r = run("read", join(root, "secret.txt"));
    // No preopen matches, so the guest's own libc refuses before the host is asked (Rust reports no errno: -1).
    expect(r.stdout).to.match(/^err -?\d+\n$/);
    expect(r.stdout).not.to.contain(SECRET);
    expect(run("write", join(root, "canary"), "x").stdout).to.match(/^err /);
    expect(existsSync(join(root, "canary"))).to.equal(false);
  });

  it("a symlink already in the mount cannot point out (absolute or relative target)", () => {
    symlinkSync(join(root, "secret.txt"), join(mount, "abs"));
    symlinkSync("../secret.txt", join(mount, "rel"));
    symlinkSync(join(root, "canary"), join(mount, "abs-canary"));
    expectRefused(run("read", "/data/abs"));
    expectRefused(run("read", "/data/rel"));
    expectRefused(run("write", "/data/abs-canary", "x"));
    expect(existsSync(join(root, "canary"))).to.equal(false);
    expect(readFileSync(join(root, "secret.txt"), "utf8")).to.equal(SECRET);
  });

  it("a symlink whose target stays inside the mount is followed (WASI semantics)", () => {
    symlinkSync("sub/inside.txt", join(mount, "ok-link"));
    symlinkSync("sub", join(mount, "ok-dir"));
    expect(run("read", "/data/ok-link").stdout).to.equal("ok inside\n");
    expect(run("read", "/data/ok-dir/inside.txt").stdout).to.equal("ok inside\n");
  });

  it("a mid-path directory symlink cannot lead out", () => {
    symlinkSync(root, join(mount, "rootdir"));
    symlinkSync("..", join(mount, "sub", "up"));
    expectRefused(run("read", "/data/rootdir/secret.txt"));
    expectRefused(run("read", "/data/sub/up/../secret.txt"));
    expectRefused(run("write", "/data/rootdir/canary", "x"));
    expect(existsSync(join(root, "canary"))).to.equal(false);
    // sub/up -> .. is the mount itself: allowed.
    expect(run("read", "/data/sub/up/sub/inside.txt").stdout).to.equal("ok inside\n");
  });

  it("symlinks the guest creates cannot lead out", () => {
    expect(run("symlink", "../secret.txt", "made").stdout).to.equal("ok \n");
    expectRefused(run("read", "/data/made"));
    expect(run("symlink", "..", "made-dir").stdout).to.equal("ok \n");
    expectRefused(run("read", "/data/made-dir/secret.txt"));
    expectRefused(run("write", "/data/made-dir/canary", "x"));
    // Absolute targets are refused at creation.
    const abs = run("symlink", join(root, "secret.txt"), "abs");
    expect(abs.stdout).to.equal(`err ${Errno.PERM}\n`);
    expect(abs.denials.map((d) => d.operation)).to.deep.equal(["path_symlink"]);
    expect(existsSync(join(mount, "abs"))).to.equal(false);
    expect(existsSync(join(root, "canary"))).to.equal(false);
  });

  it("hard links cannot reach files outside", () => {
    expectRefused(run("link", "/data/../secret.txt", "/data/hard"));
    expect(existsSync(join(mount, "hard"))).to.equal(false);
    // Linking a symlink that points out links the symlink itself, which still cannot be followed out.
    symlinkSync(join(root, "secret.txt"), join(mount, "abs"));
    expect(run("link", "/data/abs", "/data/hard2").stdout).to.equal("ok \n");
    expectRefused(run("read", "/data/hard2"));
    // A hard link the guest makes of its own file stays an ordinary file inside.
    expect(run("link", "/data/sub/inside.txt", "/data/hard3").stdout).to.equal("ok \n");
    expect(run("read", "/data/hard3").stdout).to.equal("ok inside\n");
  });

  it("a directory swapped for a symlink while the guest resolves paths never leads out", async () => {
    // The host side swaps mount/d between a real directory and a symlink to root/ in a tight loop, in
    // another thread, while the guest reads d/secret.txt thousands of times.
    mkdirSync(join(mount, "d"));
    writeFileSync(join(mount, "d", "secret.txt"), "inside copy");
    symlinkSync(root, join(mount, "d-link"));
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const swapper = new Worker(
      `
      const { renameSync } = require("node:fs");
      const { workerData: { mount, stop } } = require("node:worker_threads");
      let swaps = 0;
      while (Atomics.load(stop, 0) === 0) {
        try {
          renameSync(mount + "/d", mount + "/d-dir");
          renameSync(mount + "/d-link", mount + "/d");
          renameSync(mount + "/d", mount + "/d-link");
          renameSync(mount + "/d-dir", mount + "/d");
          swaps++;
        } catch {}
      }
      require("node:worker_threads").parentPort.postMessage(swaps);
    `,
      { eval: true, workerData: { mount, stop } },
    );
    const swaps = new Promise<number>((resolve) => swapper.once("message", resolve));
    await new Promise((r) => setTimeout(r, 50));
    const r = run("race", "/data/d/secret.txt", "3000");
    Atomics.store(stop, 0, 1);
    expect(await swaps).to.be.greaterThan(10);
    await swapper.terminate();
    const m = /^ok inside=(\d+) outside=(\d+) errors=(\d+)\n$/.exec(r.stdout);
    expect(m, r.stdout).to.not.equal(null);
    expect(Number(m?.[2])).to.equal(0);
    expect(Number(m?.[1])).to.be.greaterThan(0);
    expect(Number(m?.[3])).to.be.greaterThan(0);
  });

  it("a directory the guest holds, moved out of the mount by another process, gives nothing outside", async () => {
    mkdirSync(join(mount, "held"));
    writeFileSync(join(mount, "held", "x.txt"), "held copy");
    mkdirSync(join(root, "elsewhere"));
    // Another process moves the directory out while the guest sleeps holding it open.
    const mover = spawn("sh", ["-c", `sleep 0.2 && mv "${join(mount, "held")}" "${join(root, "elsewhere", "held")}"`]);
    const exited = new Promise((r) => mover.once("exit", r));
    const r = run("held-dir", "/data/held", "x.txt", "800");
    await exited;
    expect(existsSync(join(root, "elsewhere", "held", "x.txt"))).to.equal(true);
    expectRefused(r);
    expect(r.denials.some((d) => /outside the mount/.test(d.reason))).to.equal(true);
  });

  it("rename cannot move anything out of the mount", () => {
    expectRefused(run("rename", "/data/sub/inside.txt", "/data/../moved.txt"));
    expect(existsSync(join(root, "moved.txt"))).to.equal(false);
    expect(existsSync(join(mount, "sub", "inside.txt"))).to.equal(true);
    renameSync(join(mount, "sub"), join(mount, "sub2")); // the host may rearrange; the guest still cannot escape
    expectRefused(run("rename", "/data/sub2", "/data/sub2/../../sub3"));
    expect(existsSync(join(root, "sub3"))).to.equal(false);
  });

  it("no mounts means no filesystem at all", () => {
    const r = runGuest(probe, ["read", "/data/sub/inside.txt"]);
    expect(r.stdout).to.match(/^err -?\d+\n$/);
    expect(r.stdout).not.to.contain("inside");
  });
});
