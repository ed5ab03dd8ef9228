import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Errno, Fdflags, Oflags, Rights } from "../../src/runtime/wasi/abi.js";
import { WasiHost } from "../../src/runtime/wasi/host.js";
import type { WasiMount } from "../../src/runtime/wasi/types.js";
import { errnosOf, I32, i32, i64, scriptedGuest, WASI, type ScriptedCall } from "../fixtures/hostile/wasm-builder.js";

/** Imports of every scripted guest here, by index. */
const IMPORTS = [
  WASI.fd_write, // 0
  WASI.path_open, // 1
  { name: "fd_close", params: [I32], results: [I32] }, // 2
  { name: "fd_renumber", params: [I32, I32], results: [I32] }, // 3
  { name: "fd_prestat_get", params: [I32, I32], results: [I32] }, // 4
  WASI.fd_readdir, // 5
  { name: "path_rename", params: [I32, I32, I32, I32, I32, I32], results: [I32] }, // 6
  WASI.fd_read, // 7
];
const ALL = (1n << 30n) - 1n;
const RW = Rights.FD_READ | Rights.FD_WRITE;
/** Every right but those that write a file's data: a directory asked for with those is EISDIR, as POSIX says. */
const DIR_BASE = ALL & ~(Rights.FD_WRITE | Rights.FD_ALLOCATE | Rights.FD_FILESTAT_SET_SIZE);
const SCRATCH = 0x40;
const STRINGS_AT = 0x400;
const READ_BUF = 0x2000;

/** Builds a scripted guest's calls, placing its path strings in memory as it goes. */
class Script {
  readonly calls: ScriptedCall[] = [];
  readonly strings: { offset: number; bytes: number[] }[] = [];
  private next = STRINGS_AT;

  /** Places `s` in memory; returns pointer and length instructions. */
  str(s: string): number[] {
    const bytes = [...Buffer.from(s, "utf8")];
    const at = this.next;
    this.strings.push({ offset: at, bytes });
    this.next += bytes.length + 8;
    return [...i32(at), ...i32(bytes.length)];
  }
  open(fd: number, path: string | number[], oflags = 0, base = DIR_BASE, fdflags = 0, follow = false): this {
    const p = typeof path === "string" ? this.str(path) : path;
    this.calls.push({
      imp: 1,
      args: [...i32(fd), ...i32(follow ? 1 : 0), ...p, ...i32(oflags), ...i64(base), ...i64(ALL), ...i32(fdflags), ...i32(SCRATCH)],
    });
    return this;
  }
  close(fd: number): this {
    this.calls.push({ imp: 2, args: i32(fd) });
    return this;
  }
  renumber(from: number, to: number): this {
    this.calls.push({ imp: 3, args: [...i32(from), ...i32(to)] });
    return this;
  }
  prestat(fd: number): this {
    this.calls.push({ imp: 4, args: [...i32(fd), ...i32(SCRATCH + 8)] });
    return this;
  }
  readdir(fd: number, cookie: bigint, bufLen = 4096): this {
    this.calls.push({ imp: 5, args: [...i32(fd), ...i32(0x1000), ...i32(bufLen), ...i64(cookie), ...i32(SCRATCH + 16)] });
    return this;
  }
  rename(fd: number, from: string, toFd: number, to: string): this {
    this.calls.push({ imp: 6, args: [...i32(fd), ...this.str(from), ...i32(toFd), ...this.str(to)] });
    return this;
  }
  /** fd_read of up to 64 bytes into READ_BUF (the bytes are not printed; the test reads the file itself). */
  read(fd: number): this {
    this.strings.push({ offset: SCRATCH + 24, bytes: [...le32(READ_BUF), ...le32(64)] });
    this.calls.push({ imp: 7, args: [...i32(fd), ...i32(SCRATCH + 24), ...i32(1), ...i32(SCRATCH + 32)] });
    return this;
  }
  /** Runs the script with `mounts`; returns each call's errno. */
  run(mounts: WasiMount[]): number[] {
    const out: Uint8Array[] = [];
    const host = new WasiHost({
      args: ["redteam.wasm"],
      env: new Map(),
      stdin: new Uint8Array(0),
      mounts,
      memoryLimitBytes: 1 << 20,
      maxOutputBytes: 1 << 20,
      onStdout: (b) => out.push(Buffer.from(b)),
      onStderr: () => undefined,
      onDenial: () => undefined,
    });
    const result = host.run(new WebAssembly.Module(scriptedGuest(IMPORTS, this.calls, this.strings)));
    expect(result).to.deep.equal({ outcome: "exited", exitCode: 0 });
    return errnosOf(Buffer.concat(out));
  }
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/**
 * Red-team filesystem attacks beyond wasi-escape.test.ts, made with raw preview1 calls
 * (no libc in between to tidy up what the guest asks for). Layout per test, in mkdtemp:
 *   root/secret.txt   never reachable
 *   root/mount/       guest /data (fd 3), writable unless said
 */
describe("WASI red team: filesystem", function () {
  this.timeout(60_000);
  let root: string;
  let mount: string;
  const rw = (): WasiMount[] => [{ hostPath: mount, guestPath: "/data", writable: true }];

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "sandboxd-redteam-fs-"));
    mount = join(root, "mount");
    mkdirSync(join(mount, "sub"), { recursive: true });
    writeFileSync(join(root, "secret.txt"), "SECRET");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("path_open of '.', '', '/', '//', './', 'sub/..', 'sub/../..' and a path with NUL", () => {
    const s = new Script();
    for (const p of [".", "", "/", "//", "./", "sub/..", "sub/../..", "sub/./../sub/.", "sub\0/../../secret.txt"])
      s.open(3, p, Oflags.DIRECTORY).close(4);
    const errnos = s.run(rw()).filter((_, i) => i % 2 === 0);
    expect(errnos).to.deep.equal([0, Errno.NOENT, Errno.NOTCAPABLE, Errno.NOTCAPABLE, 0, 0, Errno.NOTCAPABLE, 0, Errno.INVAL]);
  });

  it("regression: a path length of 4 GiB (-1 as a signed i32) is ENAMETOOLONG, as is 4097 bytes", () => {
    const s = new Script().open(3, [...i32(STRINGS_AT), ...i32(0xffffffff)]).open(3, [...i32(0), ...i32(4097)]);
    expect(s.run(rw())).to.deep.equal([Errno.NAMETOOLONG, Errno.NAMETOOLONG]);
  });

  it("symlink loops end in ELOOP; a very deep path is just not found", () => {
    symlinkSync("l2", join(mount, "l1"));
    symlinkSync("l1", join(mount, "l2"));
    symlinkSync("l3/x", join(mount, "l3"));
    const s = new Script()
      .open(3, "l1", 0, DIR_BASE, 0, true)
      .open(3, "l3", 0, DIR_BASE, 0, true)
      .open(3, "l1/x")
      .open(3, "a/".repeat(2000));
    expect(s.run(rw())).to.deep.equal([Errno.LOOP, Errno.LOOP, Errno.LOOP, Errno.NOENT]);
  });

  it("/proc/self/... inside the mount is the mount's own directory, and links to the host's /proc lead nowhere", () => {
    mkdirSync(join(mount, "proc", "self", "fd"), { recursive: true });
    writeFileSync(join(mount, "proc", "self", "fd", "3"), "mount content");
    symlinkSync("/proc/self/root", join(mount, "abs"));
    symlinkSync("../../../../../../../../proc/self/root", join(mount, "rel"));
    const s = new Script()
      .open(3, "proc/self/fd/3", 0, Rights.FD_READ)
      .close(4)
      .open(3, "abs/etc/passwd", 0, Rights.FD_READ, 0, true)
      .open(3, "rel/etc/passwd", 0, Rights.FD_READ, 0, true)
      .open(3, "proc/self/fd/3/../../../../secret.txt", 0, Rights.FD_READ);
    expect(s.run(rw())).to.deep.equal([0, 0, Errno.NOTCAPABLE, Errno.NOTCAPABLE, Errno.NOTDIR]);
  });

  it("no combination of oflags, fdflags and rights creates, truncates or appends on a read-only mount", () => {
    writeFileSync(join(mount, "f"), "keep");
    const s = new Script();
    for (let oflags = 0; oflags < 16; oflags++) {
      for (const fdflags of [0, Fdflags.APPEND, Fdflags.SYNC | Fdflags.DSYNC]) {
        for (const base of [0n, Rights.FD_READ, Rights.FD_WRITE, RW, ALL]) {
          for (const path of ["f", "new", "sub/new", "sub/../f"]) s.open(3, path, oflags, base, fdflags).close(4);
        }
      }
    }
    s.run([{ hostPath: mount, guestPath: "/data", writable: false }]);
    expect(readFileSync(join(mount, "f"), "utf8")).to.equal("keep");
    expect(readdirSync(mount).sort()).to.deep.equal(["f", "sub"]);
    expect(readdirSync(join(mount, "sub"))).to.deep.equal([]);
  });

  it("a FIFO and a unix socket in the mount are refused at once, never waited on", async () => {
    execFileSync("mkfifo", [join(mount, "fifo")]);
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(join(mount, "sock"), resolve));
    try {
      const s = new Script()
        .open(3, "fifo", 0, Rights.FD_READ)
        .open(3, "fifo", 0, Rights.FD_WRITE)
        .open(3, "sock", 0, Rights.FD_READ)
        .open(3, "sock", 0, RW)
        .readdir(3, 0n);
      const errnos = s.run(rw());
      for (const e of errnos.slice(0, 4)) expect([Errno.NOTCAPABLE, Errno.NXIO]).to.include(e);
      expect(errnos[4]).to.equal(0);
    } finally {
      server.close();
    }
  });

  it("a closed preopen's number is reused for a plain file, which is no longer a preopen nor a directory", () => {
    mkdirSync(join(root, "ro"));
    writeFileSync(join(root, "ro", "x"), "ro");
    const mounts: WasiMount[] = [
      { hostPath: join(root, "ro"), guestPath: "/ro", writable: false },
      { hostPath: mount, guestPath: "/data", writable: true },
    ];
    const s = new Script().close(3).open(4, "x", Oflags.CREAT, RW).prestat(3).open(3, "x", 0, Rights.FD_READ);
    // fd 3 is now a file: no PATH_OPEN right, so a lookup through it is ENOTCAPABLE.
    expect(s.run(mounts)).to.deep.equal([0, 0, Errno.BADF, Errno.NOTCAPABLE]);
    expect(existsSync(join(mount, "x"))).to.equal(true);
    expect(readFileSync(join(root, "ro", "x"), "utf8")).to.equal("ro");
  });

  it("fd_renumber onto a preopen: the writable mount takes the number, the read-only one stays untouched", () => {
    mkdirSync(join(root, "ro"));
    const mounts: WasiMount[] = [
      { hostPath: join(root, "ro"), guestPath: "/ro", writable: false },
      { hostPath: mount, guestPath: "/data", writable: true },
    ];
    const s = new Script().renumber(4, 3).open(3, "y", Oflags.CREAT, RW).close(4).renumber(3, 3).renumber(3, 99).renumber(99, 3).prestat(4);
    expect(s.run(mounts)).to.deep.equal([0, 0, 0, 0, Errno.BADF, Errno.BADF, Errno.BADF]);
    expect(existsSync(join(mount, "y"))).to.equal(true);
    expect(readdirSync(join(root, "ro"))).to.deep.equal([]);
  });

  it("regression: fd_readdir with a cookie of u64::MAX (-1 as i64) or past the end returns nothing instead of crashing the host", () => {
    writeFileSync(join(mount, "a"), "");
    const s = new Script()
      .readdir(3, (1n << 64n) - 1n)
      .readdir(3, 1n << 53n)
      .readdir(3, 0n, 30)
      .readdir(3, 3n)
      .readdir(3, 2n);
    expect(s.run(rw())).to.deep.equal([0, 0, 0, 0, 0]);
  });

  it("fd_readdir resumed with a cookie after the directory changed under it stays consistent", () => {
    for (const n of ["a", "b", "c"]) writeFileSync(join(mount, n), "");
    const s = new Script().readdir(3, 0n, 30).rename(3, "a", 3, "z").rename(3, "b", 3, "y").readdir(3, 1n).readdir(3, 4n).readdir(3, 0n);
    expect(s.run(rw())).to.deep.equal([0, 0, 0, 0, 0, 0]);
  });

  it("regression: a held directory moved into another mount takes no create in it (O_CREAT acted before the check)", () => {
    mkdirSync(join(mount, "a", "b"), { recursive: true });
    mkdirSync(join(root, "other"));
    const mounts: WasiMount[] = [
      { hostPath: mount, guestPath: "/data", writable: true },
      { hostPath: join(root, "other"), guestPath: "/other", writable: true },
    ];
    // fd 5 = /data/a/b; then /data/a moves to /other/moved (same filesystem, so rename works).
    const s = new Script()
      .open(3, "a/b", Oflags.DIRECTORY)
      .rename(3, "a", 3, "c")
      .open(5, "..", Oflags.DIRECTORY)
      .open(5, ".", Oflags.DIRECTORY)
      .close(6)
      .rename(3, "c", 4, "moved")
      .open(5, "x", Oflags.CREAT, RW)
      .open(5, "../../secret.txt", 0, Rights.FD_READ);
    expect(s.run(mounts)).to.deep.equal([0, 0, Errno.NOTCAPABLE, 0, 0, 0, Errno.NOTCAPABLE, Errno.NOTCAPABLE]);
    expect(existsSync(join(root, "other", "moved", "b", "x"))).to.equal(false);
  });

  it("path_open with O_CREAT (tried first with O_EXCL, to know what it created) gives the kernel's answers", () => {
    writeFileSync(join(mount, "f"), "keep");
    symlinkSync("f", join(mount, "link"));
    symlinkSync("nowhere", join(mount, "dangling"));
    const s = new Script()
      .open(3, "f", Oflags.CREAT, RW)
      .close(4) // exists: opened as is, not truncated
      .open(3, "new", Oflags.CREAT, RW)
      .close(4)
      .open(3, "sub", Oflags.CREAT, Rights.FD_READ) // a directory
      .open(3, "sub", Oflags.CREAT, RW)
      .open(3, "link", Oflags.CREAT, RW) // symlinks are never followed by the kernel
      .open(3, "dangling", Oflags.CREAT, RW)
      .open(3, "f", Oflags.CREAT | Oflags.EXCL, RW)
      .open(3, "f", Oflags.CREAT | Oflags.TRUNC, RW)
      .close(4);
    expect(s.run(rw())).to.deep.equal([0, 0, 0, 0, Errno.ISDIR, Errno.ISDIR, Errno.LOOP, Errno.LOOP, Errno.EXIST, 0, 0]);
    expect(readFileSync(join(mount, "f"), "utf8")).to.equal("");
    expect(existsSync(join(mount, "new"))).to.equal(true);
    expect(existsSync(join(mount, "nowhere"))).to.equal(false);
  });
});
