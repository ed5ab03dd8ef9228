import { expect } from "chai";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Errno } from "../../src/runtime/wasi/abi.js";
import { loadGuest, runGuest, type GuestRun } from "../fixtures/wasi/guest.js";

/**
 * A read-only mount refuses every mutating call, through paths (EPERM) and through descriptors
 * opened for reading (EBADF), records a denial each time, and leaves the host tree untouched.
 * /ro is the first mount (guest fd 3, which the probe's raw calls use), /rw a writable neighbour.
 */
describe("WASI host: read-only mounts", function () {
  this.timeout(120_000);
  let probe: WebAssembly.Module;
  let root: string;
  let ro: string;
  let rw: string;
  let mtimeBefore: number;

  before(() => {
    probe = loadGuest("probe");
  });
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-wasi-ro-"));
    ro = join(root, "ro");
    rw = join(root, "rw");
    mkdirSync(join(ro, "d"), { recursive: true });
    mkdirSync(rw);
    writeFileSync(join(ro, "f"), "original");
    writeFileSync(join(rw, "x"), "rw file");
    mtimeBefore = statSync(join(ro, "f")).mtimeMs;
  });
  afterEach(() => {
    // Nothing under ro/ changed, whatever the call was.
    expect(readFileSync(join(ro, "f"), "utf8")).to.equal("original");
    expect(statSync(join(ro, "f")).mtimeMs).to.equal(mtimeBefore);
    expect(existsSync(join(ro, "d"))).to.equal(true);
    rmSync(root, { recursive: true, force: true });
  });

  const run = (...args: string[]): GuestRun =>
    runGuest(probe, args, {
      mounts: [
        { hostPath: ro, guestPath: "/ro", writable: false },
        { hostPath: rw, guestPath: "/rw", writable: true },
      ],
    });

  const cases: [string, string[], number, string, string?][] = [
    ["create a file", ["create", "/ro/new"], Errno.PERM, "path_open", "new"],
    ["write (open for writing)", ["write", "/ro/f", "changed"], Errno.PERM, "path_open"],
    ["append", ["append", "/ro/f", "more"], Errno.PERM, "path_open"],
    ["truncate (O_TRUNC)", ["truncate", "/ro/f"], Errno.PERM, "path_open"],
    ["mkdir", ["mkdir", "/ro/nd"], Errno.PERM, "path_create_directory", "nd"],
    ["rmdir", ["rmdir", "/ro/d"], Errno.PERM, "path_remove_directory"],
    ["unlink", ["rm", "/ro/f"], Errno.PERM, "path_unlink_file"],
    ["rename within", ["rename", "/ro/f", "/ro/g"], Errno.PERM, "path_rename", "g"],
    ["rename out to a writable mount", ["rename", "/ro/f", "/rw/g"], Errno.PERM, "path_rename"],
    ["rename in from a writable mount", ["rename", "/rw/x", "/ro/x"], Errno.PERM, "path_rename", "x"],
    ["hard link out to a writable mount", ["link", "/ro/f", "/rw/l"], Errno.PERM, "path_link"],
    ["hard link in from a writable mount", ["link", "/rw/x", "/ro/l"], Errno.PERM, "path_link", "l"],
    ["symlink", ["symlink", "f", "s"], Errno.PERM, "path_symlink", "s"],
    ["set times by path", ["set-times", "f"], Errno.PERM, "path_filestat_set_times"],
    ["set times on a descriptor", ["set-times-fd", "/ro/f"], Errno.BADF, "fd_filestat_set_times"],
    ["fd_allocate on a descriptor", ["allocate-fd", "/ro/f"], Errno.BADF, "fd_allocate"],
    ["set size on a descriptor", ["set-len-fd", "/ro/f"], Errno.BADF, "fd_filestat_set_size"],
    ["write on a descriptor", ["write-fd", "/ro/f"], Errno.BADF, "fd_write"],
  ];
  for (const [what, args, errno, operation, absent] of cases) {
    it(`refuses: ${what}`, () => {
      const r = run(...args);
      expect(r.stdout).to.equal(`err ${errno}\n`);
      expect(r.denials.map((d) => d.operation)).to.include(operation);
      expect(r.denials.every((d) => d.path.startsWith("/ro") && /read-only/.test(d.reason))).to.equal(true);
      if (absent !== undefined) expect(existsSync(join(ro, absent))).to.equal(false);
      expect(existsSync(join(rw, "g"))).to.equal(false);
      expect(existsSync(join(rw, "l"))).to.equal(false);
    });
  }

  it("still allows reading and listing", () => {
    expect(run("read", "/ro/f").stdout).to.equal("ok original\n");
    expect(run("ls", "/ro").stdout).to.equal("ok d,f\n");
  });

  it("the same calls succeed on the writable mount (so the refusals above are about the grant)", () => {
    expect(run("write", "/rw/x", "changed").stdout).to.equal("ok \n");
    expect(readFileSync(join(rw, "x"), "utf8")).to.equal("changed");
    expect(run("mkdir", "/rw/nd").stdout).to.equal("ok \n");
    expect(run("rename", "/rw/x", "/rw/y").stdout).to.equal("ok \n");
    expect(run("rm", "/rw/y").stdout).to.equal("ok \n");
  });
});
