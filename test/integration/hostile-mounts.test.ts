import { expect } from "chai";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Outcome, type SignedPolicy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { MAX_OPEN_FDS } from "../../src/limits.js";
import { buildModule, call, i32, i64, I32_STORE, WASI } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, helloWasm, register } from "../helpers/hostile.js";
import { makeKey, signed, writePublicKeys } from "../unit/policy-fixtures.js";

const EFAULT = 21;
const EMFILE = 33;
const PAGES = 1120;
/** Where the guest keeps its path, the fd path_open gives, and the count fd_write reports (past the iovecs). */
const PATH_AT = 73_000_000;
const FD_AT = 73_000_100;
const NWRITTEN_AT = 73_000_200;
const IOVECS = 9_000_000;

/** Hostile guests with a real signed policy and mounts, through a real daemon. */
describe("hostile guests with mounts against a real daemon", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;
  let root: string;
  const authority = makeKey("redteam");

  before(async function () {
    root = await mkdtemp(path.join(tmpdir(), "sandboxd-hostile-mounts-"));
    const keys = path.join(root, "keys");
    await mkdir(keys);
    await writePublicKeys(keys, [authority]);
    daemon = await startDaemon({
      args: ["--allow-unsigned", "--workers", "2", "--trusted-keys", keys, "--allow-mount-root", root, "--default-timeout-ms", "20000"],
    });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
  });
  checkSurvivalAfterEach(
    () => ({ daemon, pid, helloId }),
    () => rm(root, { recursive: true, force: true }),
  );

  function policy(mountDir: string, writable: boolean, memoryLimitBytes = 128 * 1024 * 1024): SignedPolicy {
    const s = signed(
      {
        expiresAtUnix: Math.floor(Date.now() / 1000) + 3600,
        memoryLimitBytes,
        mounts: [{ hostPath: mountDir, guestPath: "/data", writable }],
      },
      authority,
    );
    return { policy: Buffer.from(s.policy), keyId: s.keyId, signature: Buffer.from(s.signature) };
  }

  /** path_open(3, "f") then `op`(fd, iovs 0, 9*10^6 zero-length iovecs) and proc_exit(errno). */
  function iovecBomb(op: typeof WASI.fd_write | typeof WASI.fd_read, write: boolean): Uint8Array {
    const rights = write ? 1n << 6n : 1n << 1n;
    const body = [
      ...i32(0),
      ...i32(3),
      ...i32(0),
      ...i32(PATH_AT),
      ...i32(1),
      ...i32(0),
      ...i64(rights),
      ...i64(0n),
      ...i32(0),
      ...i32(FD_AT),
      ...call(1),
      ...I32_STORE,
      ...i32(FD_AT),
      0x28,
      0x02,
      0x00, // i32.load fd
      ...i32(0),
      ...i32(IOVECS),
      ...i32(NWRITTEN_AT),
      ...call(0),
      ...call(2),
    ];
    return buildModule({
      imports: [op, WASI.path_open, WASI.proc_exit],
      memory: { min: PAGES },
      data: [{ offset: PATH_AT, bytes: [...Buffer.from("f")] }],
      funcs: [{ params: [], results: [], body }],
    });
  }

  for (const [name, op, write] of [
    ["fd_write", WASI.fd_write, true],
    ["fd_read", WASI.fd_read, false],
  ] as const) {
    it(`regression: ${name} on a mounted file with 9*10^6 iovecs does not exhaust the worker heap (the worker died of heap OOM)`, async function () {
      const dir = await mkdtemp(path.join(root, "m-"));
      await writeFile(path.join(dir, "f"), "content");
      const id = await register(daemon, iovecBomb(op, write));
      const r = await daemon.execute({ target: moduleTarget(id), policy: policy(dir, write) });
      expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
      expect(r.exitCode).to.equal(0);
      expect(await readFile(path.join(dir, "f"), "utf8")).to.equal("content");
    });
  }

  it("a Rust guest opening 10,000 files is stopped at MAX_OPEN_FDS with EMFILE, and the daemon keeps no fd of it", async function () {
    const dir = await mkdtemp(path.join(root, "m-"));
    await writeFile(path.join(dir, "f"), "content");
    const source = `fn main() {
      let mut held = Vec::new();
      for _ in 0..10_000 { match std::fs::File::open("/data/f") { Ok(f) => held.push(f), Err(e) => { println!("{} {:?}", held.len(), e.raw_os_error()); return; } } }
      println!("{} none", held.len());
    }`;
    const compiled = await daemon.compile({ input: { $case: "source", value: source } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    const fdsBefore = (await readdir(`/proc/${pid}/fd`)).length;
    const r = await daemon.execute({ target: moduleTarget(compiled.moduleId), policy: policy(dir, false) });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.stdout.toString()).to.equal(`${MAX_OPEN_FDS - 1} Some(${EMFILE})\n`);
    expect(r.denials.some((d) => /descriptor limit/.test(d.reason))).to.equal(true);
    expect((await readdir(`/proc/${pid}/fd`)).length).to.be.at.most(fdsBefore + 2);
  });

  it("regression: poll_oneoff with 2*10^7 clock subscriptions in a 1 GiB memory does not exhaust the worker heap", async function () {
    // 2*10^7 zeroed subscriptions (960 MB) are expired relative clocks; the host once kept an object per subscription.
    const pages = 15_360;
    const body = [...i32(0), ...i32(0), ...i32(20_000_000), ...i32(pages * 65_536 - 16), ...call(0), ...call(1)];
    const wasm = buildModule({
      imports: [WASI.poll_oneoff, WASI.proc_exit],
      memory: { min: pages },
      funcs: [{ params: [], results: [], body }],
    });
    const dir = await mkdtemp(path.join(root, "m-"));
    const r = await daemon.execute({ target: moduleTarget(await register(daemon, wasm)), policy: policy(dir, false, pages * 65_536) });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(0);
  });

  it("fd_write on a mounted file with an iovec past the end of memory gets EFAULT and writes nothing", async function () {
    const dir = await mkdtemp(path.join(root, "m-"));
    await writeFile(path.join(dir, "f"), "content");
    const body = [
      ...i32(0),
      ...i32(3),
      ...i32(0),
      ...i32(PATH_AT),
      ...i32(1),
      ...i32(0),
      ...i64(1n << 6n),
      ...i64(0n),
      ...i32(0),
      ...i32(FD_AT),
      ...call(1),
      ...I32_STORE,
      // iovec 0 = {ptr 0, len 3} (fine), iovec 1 = {ptr 0xffffff00, len 0x200} (outside memory)
      ...i32(12),
      ...i32(3),
      ...I32_STORE,
      ...i32(16),
      ...i32(0xffffff00),
      ...I32_STORE,
      ...i32(20),
      ...i32(0x200),
      ...I32_STORE,
      ...i32(FD_AT),
      0x28,
      0x02,
      0x00,
      ...i32(8),
      ...i32(2),
      ...i32(NWRITTEN_AT),
      ...call(0),
      ...call(2),
    ];
    const wasm = buildModule({
      imports: [WASI.fd_write, WASI.path_open, WASI.proc_exit],
      memory: { min: PAGES },
      data: [{ offset: PATH_AT, bytes: [...Buffer.from("f")] }],
      funcs: [{ params: [], results: [], body }],
    });
    const r = await daemon.execute({ target: moduleTarget(await register(daemon, wasm)), policy: policy(dir, true) });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(EFAULT);
    expect(await readFile(path.join(dir, "f"), "utf8")).to.equal("content");
  });
});
