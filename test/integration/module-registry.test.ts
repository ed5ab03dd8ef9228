import { expect } from "chai";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { call, DROP, i32, store32, uleb } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { makeKey, signed, wire, writePublicKeys } from "../unit/policy-fixtures.js";

const MIB = 1024 * 1024;
const PAGE = 65_536;
/** Size of the large module's data segment: the module is about this big. */
const DATA_BYTES = 16 * MIB;
/** Memory limits it runs under, each a different page count. */
const LIMITS = 30;
/** Daemon RSS growth allowed over the 30 runs: one compiled copy, not thirty (they took ~546 MB). */
const MAX_RSS_GROWTH_BYTES = 200 * MIB;

async function rssBytes(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(text)?.[1] ?? 0) * 1024;
}

/** The in-memory module registry: one compiled module whatever the memory limit, bounded by bytes. */
describe("compiled modules in memory", function () {
  this.timeout(240_000);
  let daemon: TestDaemon;
  let root: string;
  const authority = makeKey("registry");

  before(async function () {
    root = await mkdtemp(path.join(tmpdir(), "sandboxd-registry-"));
    await mkdir(path.join(root, "keys"));
    await writePublicKeys(path.join(root, "keys"), [authority]);
  });
  afterEach(async function () {
    await daemon?.stop();
  });
  after(async function () {
    await rm(root, { recursive: true, force: true });
  });

  /** A 16 MiB module (a data segment of 'z') that prints its memory's first data byte and exits; assembled here, as the builder spreads arrays. */
  function bigModule(): Uint8Array {
    const u = (n: number): number[] => uleb(n);
    const sec = (id: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([id, ...u(body.length)]), body]);
    const name = (text: string): number[] => [...u(text.length), ...Buffer.from(text)];
    const I32 = 0x7f;
    const types = Buffer.from([2, 0x60, 4, I32, I32, I32, I32, 1, I32, 0x60, 0, 0]);
    const imports = Buffer.from([1, ...name("wasi_snapshot_preview1"), ...name("fd_write"), 0x00, 0]);
    const memory = Buffer.from([1, 0, ...u(DATA_BYTES / PAGE + 1)]);
    const exports = Buffer.from([2, ...name("_start"), 0x00, 1, ...name("memory"), 0x02, 0]);
    const body = [0, ...store32(0, PAGE), ...store32(4, 1), ...i32(1), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP, 0x0b];
    const code = Buffer.from([1, ...u(body.length), ...body]);
    const data = Buffer.concat([Buffer.from([1, 0, ...i32(PAGE), 0x0b, ...u(DATA_BYTES)]), Buffer.alloc(DATA_BYTES, 0x7a)]);
    return Buffer.concat([
      Buffer.from([0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0]),
      sec(1, types),
      sec(2, imports),
      sec(3, Buffer.from([1, 1])),
      sec(5, memory),
      sec(7, exports),
      sec(10, code),
      sec(11, data),
    ]);
  }

  it(`regression: one 16 MiB module under ${LIMITS} memory limits is held once (it was compiled and kept once per limit)`, async function () {
    daemon = await startDaemon({ args: ["--trusted-keys", path.join(root, "keys"), "--workers", "2"] });
    const pid = daemon.process.pid!;
    const id = await register(daemon, bigModule());
    await new Promise((r) => setTimeout(r, 500));
    const baseline = await rssBytes(pid);
    for (let i = 0; i < LIMITS; i++) {
      const memoryLimitBytes = DATA_BYTES + (2 + i) * PAGE;
      const policy = wire(signed({ expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, memoryLimitBytes }, authority));
      const r = await daemon.execute({ target: moduleTarget(id), policy });
      expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
      expect(r.stdout.toString()).to.equal("z");
    }
    const growth = (await rssBytes(pid)) - baseline;
    expect(growth, `daemon RSS grew by ${(growth / MIB).toFixed(0)} MiB`).to.be.lessThan(MAX_RSS_GROWTH_BYTES);
  });

  it("modules beyond --memory-cache-max-bytes are dropped and compiled again from disk when needed", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--memory-cache-max-bytes", String(DATA_BYTES + MIB), "--workers", "1"] });
    const big = await register(daemon, bigModule());
    const hello = await register(daemon, helloWasm());
    for (let round = 0; round < 3; round++) {
      const a = await daemon.execute({ target: moduleTarget(big) });
      expect(a.stdout.toString()).to.equal("z");
      const b = await daemon.execute({ target: moduleTarget(hello) });
      expect(b.stdout.toString()).to.equal("ok\n");
    }
    await expectStillServing(daemon, daemon.process.pid!, hello);
  });

  it("a module whose initial memory exceeds the run's limit is refused as INVALID_WASM, under that limit only", async function () {
    daemon = await startDaemon({ args: ["--trusted-keys", path.join(root, "keys")] });
    const id = await register(daemon, bigModule());
    const small = wire(signed({ expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, memoryLimitBytes: 8 * MIB }, authority));
    const refused = await daemon.execute({ target: moduleTarget(id), policy: small }).then(
      () => undefined,
      (e: { code: number; details: string }) => e,
    );
    expect(refused?.details).to.match(/initial memory .* exceeds the memory limit/);
    const enough = wire(signed({ expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, memoryLimitBytes: 32 * MIB }, authority));
    expect((await daemon.execute({ target: moduleTarget(id), policy: enough })).stdout.toString()).to.equal("z");
  });
});
