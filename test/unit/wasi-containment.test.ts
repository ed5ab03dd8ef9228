import { expect } from "chai";
import { mkdirSync, mkdtempSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Errno } from "../../src/runtime/wasi/abi.js";
import { Containment, denialPath, insideMount, openMount, type Resolved } from "../../src/runtime/wasi/containment.js";
import { closeHostFd, type DirDescriptor } from "../../src/runtime/wasi/descriptors.js";
import { GuestErrno } from "../../src/runtime/wasi/errno.js";
import { acquireExclusive, createNamespaceLock, releaseExclusive } from "../../src/runtime/wasi/namespace-lock.js";
import type { WasiDenial } from "../../src/runtime/wasi/types.js";

/** A holder id no real thread has: stands for another guest holding the namespace lock. */
const OTHER_HOLDER = 999_999;

describe("WASI containment: path resolution inside a mount", function () {
  this.timeout(20_000);
  let root: string;
  let mountDir: string;
  let denials: WasiDenial[];
  let lock: Int32Array;
  let containment: Containment;
  let held: number[];

  /** The mount's root as a directory descriptor, as a preopen would hold it. */
  function preopen(writable = true): DirDescriptor {
    const opened = openMount({ hostPath: mountDir, guestPath: "/data", writable });
    if ("error" in opened) throw new Error(opened.error);
    held.push(opened.hostFd);
    return {
      kind: "dir",
      hostFd: opened.hostFd,
      mount: opened.mount,
      guestPath: "/data",
      rights: { base: 0n, inheriting: 0n },
      fdflags: 0,
      preopenName: undefined,
      dirents: undefined,
    };
  }

  /** The errno `body` throws as a GuestErrno (fails the test if it returns or throws anything else). */
  function errnoOf(body: () => unknown): number {
    try {
      body();
    } catch (e: unknown) {
      if (e instanceof GuestErrno) return e.errno;
      throw e;
    }
    throw new Error("expected a GuestErrno");
  }

  /** Where `path` lands, as the host path of its directory and the final name. */
  function landing(d: DirDescriptor, path: string, follow: boolean): { dir: string; name: string } {
    return containment.withPath("test", d, path, follow, (r: Resolved) => ({
      dir: readlinkSync(`/proc/self/fd/${r.dirFd}`),
      name: r.name,
    }));
  }

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-containment-"));
    mountDir = join(root, "mount");
    mkdirSync(join(mountDir, "sub", "deeper"), { recursive: true });
    mkdirSync(join(root, "outside"));
    writeFileSync(join(mountDir, "sub", "f.txt"), "inside");
    writeFileSync(join(root, "outside", "secret"), "outside");
    denials = [];
    lock = createNamespaceLock();
    containment = new Containment(lock, (operation, d, path, reason) => denials.push({ operation, path: denialPath(d, path), reason }));
    held = [];
  });

  afterEach(() => {
    for (const fd of held) closeHostFd(fd);
    rmSync(root, { recursive: true, force: true });
  });

  it("walks to the directory of the final component, which it does not open", () => {
    expect(landing(preopen(), "sub/deeper/x", false)).to.deep.equal({ dir: join(mountDir, "sub", "deeper"), name: "x" });
    expect(landing(preopen(), "sub/./deeper/../f.txt", false)).to.deep.equal({ dir: join(mountDir, "sub"), name: "f.txt" });
    expect(denials).to.deep.equal([]);
  });

  it("splices a relative symlink's target into the walk, and follows a final one only when asked", () => {
    symlinkSync("sub/deeper", join(mountDir, "link"));
    expect(landing(preopen(), "link/x", false)).to.deep.equal({ dir: join(mountDir, "sub", "deeper"), name: "x" });
    expect(landing(preopen(), "link", false)).to.deep.equal({ dir: mountDir, name: "link" });
    expect(landing(preopen(), "link", true)).to.deep.equal({ dir: join(mountDir, "sub"), name: "deeper" });
  });

  it("refuses `..` above the starting directory with ENOTCAPABLE and a denial", () => {
    expect(errnoOf(() => landing(preopen(), "sub/../../outside/secret", false))).to.equal(Errno.NOTCAPABLE);
    expect(denials).to.deep.equal([
      { operation: "test", path: "/data/sub/../../outside/secret", reason: "`..` leads outside the granted directory" },
    ]);
  });

  it("refuses a symlink to an absolute path, even one back inside the mount", () => {
    symlinkSync(mountDir, join(mountDir, "abs"));
    expect(errnoOf(() => landing(preopen(), "abs/sub", false))).to.equal(Errno.NOTCAPABLE);
    expect(denials[0]?.reason).to.equal(`symlink abs points to absolute path ${mountDir}, outside the mount`);
  });

  it("refuses a relative symlink that climbs out, and absolute guest paths", () => {
    symlinkSync("../outside", join(mountDir, "up"));
    expect(errnoOf(() => landing(preopen(), "up/secret", false))).to.equal(Errno.NOTCAPABLE);
    expect(errnoOf(() => landing(preopen(), "/etc/passwd", false))).to.equal(Errno.NOTCAPABLE);
    expect(denials.map((d) => d.reason)).to.deep.equal([
      "`..` leads outside the granted directory",
      "absolute paths are not relative to any granted directory",
    ]);
  });

  it("gives up with ELOOP after 40 symlink expansions", () => {
    symlinkSync("loop", join(mountDir, "loop"));
    expect(errnoOf(() => landing(preopen(), "loop", true))).to.equal(Errno.LOOP);
    expect(errnoOf(() => landing(preopen(), "loop/x", false))).to.equal(Errno.LOOP);
  });

  it("answers ENOTDIR for a file in the middle of a path, and for a walk from a file descriptor", () => {
    expect(errnoOf(() => landing(preopen(), "sub/f.txt/x", false))).to.equal(Errno.NOTDIR);
    const file = { ...preopen(), kind: "file" as const, access: 0, position: 0 };
    expect(errnoOf(() => containment.resolve("test", file, "x", false))).to.equal(Errno.NOTDIR);
  });

  it("refuses to walk from a directory descriptor moved outside its mount", () => {
    const d = preopen();
    // "sub" held as a descriptor, the way path_open keeps a directory it opened.
    const subFd = openMount({ hostPath: join(mountDir, "sub"), guestPath: "/data/sub", writable: true });
    if ("error" in subFd) throw new Error(subFd.error);
    held.push(subFd.hostFd);
    const subDir: DirDescriptor = { ...d, hostFd: subFd.hostFd, guestPath: "/data/sub" };
    renameSync(join(mountDir, "sub"), join(root, "outside", "sub"));
    expect(insideMount(subFd.hostFd, d.mount)).to.equal(false);
    expect(errnoOf(() => landing(subDir, "f.txt", false))).to.equal(Errno.NOTCAPABLE);
    expect(denials[0]).to.deep.equal({
      operation: "test",
      path: "/data/sub/f.txt",
      reason: "the directory descriptor was moved outside the mount",
    });
  });

  it("does not serve a mount whose host path became a symlink after the policy check", () => {
    renameSync(mountDir, join(root, "real"));
    symlinkSync(join(root, "outside"), mountDir);
    const opened = openMount({ hostPath: mountDir, guestPath: "/data", writable: true });
    expect(opened)
      .to.have.property("error")
      .that.matches(/cannot open host directory/);
  });

  it("answers EBUSY with a denial when another guest's rename holds the namespace lock too long", () => {
    const d = preopen();
    expect(acquireExclusive(lock, OTHER_HOLDER, 1_000)).to.equal(true);
    try {
      expect(errnoOf(() => containment.shared("path_open", d, "sub/f.txt", () => 0))).to.equal(Errno.BUSY);
    } finally {
      releaseExclusive(lock, OTHER_HOLDER);
    }
    expect(denials[0]?.path).to.equal("/data/sub/f.txt");
    expect(denials[0]?.reason).to.match(/held the filesystem lock/);
  });
});
