import { status } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { REMOTE_KEY_PREFIX } from "../../src/cache/remote-cache.js";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { startRedis, writeClusterKey, type TestRedis } from "../helpers/redis.js";

const src = (value: string): { input: { $case: "source"; value: string } } => ({ input: { $case: "source", value } });

/** A source no daemon has compiled before, printing `word`. */
const fresh = (word: string): string => `// ${randomBytes(8).toString("hex")}\nfn main() { println!("${word}"); }\n`;

/** How long the tests wait for a background upload or a reconnect. */
const WAIT_MS = 15_000;

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The daemon's JSON log lines with this message (and this module id, when given). */
function logLines(daemon: TestDaemon, message: string, moduleId?: string): Record<string, unknown>[] {
  return daemon
    .logs()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l["message"] === message && (moduleId === undefined || l["moduleId"] === moduleId));
}

/** rustc runs that built this module on this daemon (the compiler logs each at debug). */
const rustcRuns = (daemon: TestDaemon, moduleId: string): number => logLines(daemon, "compiled", moduleId).length;

describe("shared module cache on Redis (real redis-server, real daemons, real rustc)", function () {
  this.timeout(180_000);
  let redis: TestRedis;
  let keyDir: string;
  let keyFile: string;
  let a: TestDaemon;
  let b: TestDaemon;
  const daemons: TestDaemon[] = [];

  async function daemonWith(extra: readonly string[] = [], file = keyFile): Promise<TestDaemon> {
    const d = await startDaemon({
      args: ["--allow-unsigned", "--log-level", "debug", "--remote-cache", redis.url, "--remote-cache-key", file, ...extra],
    });
    daemons.push(d);
    await until("the daemon to connect to Redis", () => d.logs().includes("remote cache connected"));
    return d;
  }

  const recordKey = (id: string): string => `${REMOTE_KEY_PREFIX}rec:${id}`;
  const uploaded = (id: string): Promise<void> =>
    until(`the upload of ${id}`, async () => (await redis.client.exists(recordKey(id))) === 1);

  before(async function () {
    redis = await startRedis();
    keyDir = await mkdtemp(path.join(tmpdir(), "sandboxd-cluster-key-"));
    keyFile = await writeClusterKey(keyDir);
    a = await daemonWith();
    b = await daemonWith();
  });
  after(async function () {
    for (const d of daemons) await d.stop();
    await redis?.stop();
    if (keyDir) await rm(keyDir, { recursive: true, force: true });
  });

  it("a module compiled on daemon A is a cache hit on daemon B (another cache dir): same id, no rustc run on B", async function () {
    const source = fresh("built on A");
    const onA = await a.compile(src(source));
    expect(onA.ok).to.equal(true);
    expect(onA.cacheHit).to.equal(false);
    await uploaded(onA.moduleId);
    const onB = await b.compile(src(source));
    expect(onB).to.include({ ok: true, cacheHit: true, moduleId: onA.moduleId });
    expect(rustcRuns(b, onA.moduleId)).to.equal(0);
    expect(logLines(b, "remote cache hit", onA.moduleId)).to.have.length(1);
    const run = await b.execute({ target: moduleTarget(onA.moduleId) });
    expect(run.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(Buffer.from(run.stdout).toString()).to.equal("built on A\n");
  });

  it("Execute by module id on a host that never saw the source fetches the verified module", async function () {
    const onA = await a.compile(src(fresh("run by id")));
    await uploaded(onA.moduleId);
    const run = await b.execute({ target: moduleTarget(onA.moduleId) });
    expect(Buffer.from(run.stdout).toString()).to.equal("run by id\n");
    expect(rustcRuns(b, onA.moduleId)).to.equal(0);
  });

  it("a failed compile is shared too: B answers with A's diagnostics and no rustc run", async function () {
    const source = `// ${randomBytes(8).toString("hex")}\nfn main() { let x: i32 = "no"; }\n`;
    const uploadsBefore = logLines(a, "remote cache upload").length;
    const onA = await a.compile(src(source));
    expect(onA.ok).to.equal(false);
    // A failure has no module id to look for: wait for A's next upload, which can only be this one.
    await until("the failure's upload", () => logLines(a, "remote cache upload").length > uploadsBefore);
    const onB = await b.compile(src(source));
    expect(onB).to.include({ ok: false, cacheHit: true });
    expect(onB.diagnostics.map((d) => d.code)).to.deep.equal(onA.diagnostics.map((d) => d.code));
    expect(logLines(b, "compile failed")).to.have.length(0);
  });

  it("a tampered module is never run: B refuses it (logged and counted), Execute by id is NOT_FOUND, Compile rebuilds locally", async function () {
    const source = fresh("genuine");
    const onA = await a.compile(src(source));
    await uploaded(onA.moduleId);
    // Flip one byte of the stored module, as someone with write access to Redis could.
    const wasmKeys = await redis.client.keys(`${REMOTE_KEY_PREFIX}wasm:*`);
    for (const key of wasmKeys) {
      const bytes = await redis.client.getBuffer(key);
      bytes![bytes!.byteLength - 1] ^= 0xff;
      await redis.client.set(key, bytes!);
    }
    const byId = await rejection(b.execute({ target: moduleTarget(onA.moduleId) }));
    expect(byId.code).to.equal(status.NOT_FOUND);
    expect(byId.reason).to.equal("MODULE_NOT_FOUND");
    const rejected = logLines(b, "remote cache entry rejected", onA.moduleId);
    expect(rejected.length).to.be.greaterThan(0);
    expect(String(rejected[0]!["why"])).to.match(/does not hash/);
    const rebuilt = await b.execute({ target: sourceTarget(source) });
    expect(Buffer.from(rebuilt.stdout).toString()).to.equal("genuine\n");
    expect(rustcRuns(b, onA.moduleId)).to.equal(1);
  });

  it("a record replayed under another module id is rejected, and that id's own source is compiled and run", async function () {
    const x = await a.compile(src(fresh("X")));
    const ySource = fresh("Y");
    const y = await a.compile(src(ySource));
    await uploaded(x.moduleId);
    await uploaded(y.moduleId);
    // Map Y's id to X's (genuinely signed) record and module.
    await redis.client.set(recordKey(y.moduleId), (await redis.client.getBuffer(recordKey(x.moduleId)))!);
    const run = await b.execute({ target: sourceTarget(ySource) });
    expect(Buffer.from(run.stdout).toString()).to.equal("Y\n");
    expect(run.moduleId).to.equal(y.moduleId);
    expect(String(logLines(b, "remote cache entry rejected", y.moduleId)[0]?.["why"])).to.match(/MAC does not verify/);
  });

  it("entries signed with another cluster's key are rejected", async function () {
    const otherKey = await writeClusterKey(keyDir, "other.key");
    const outsider = await daemonWith([], otherKey);
    const source = fresh("outsider");
    const onOutsider = await outsider.compile(src(source));
    await uploaded(onOutsider.moduleId);
    const onB = await b.compile(src(source));
    expect(onB).to.include({ ok: true, cacheHit: false, moduleId: onOutsider.moduleId });
    expect(String(logLines(b, "remote cache entry rejected", onB.moduleId)[0]?.["why"])).to.match(/key .* which this host does not hold/);
  });

  it("the lease makes two simultaneous compiles on two daemons run rustc once", async function () {
    const source = fresh("once");
    const [onA, onB] = await Promise.all([a.compile(src(source)), b.compile(src(source))]);
    expect(onA.moduleId).to.equal(onB.moduleId);
    expect(rustcRuns(a, onA.moduleId) + rustcRuns(b, onB.moduleId)).to.equal(1);
    expect([onA.cacheHit, onB.cacheHit].sort()).to.deep.equal([false, true]);
  });

  it("a read-only host reads entries, publishes none, and takes over a lease whose holder died", async function () {
    const ro = await daemonWith(["--remote-cache-mode", "ro"]);
    const shared = fresh("read by ro");
    const onA = await a.compile(src(shared));
    await uploaded(onA.moduleId);
    expect(await ro.compile(src(shared))).to.include({ cacheHit: true, moduleId: onA.moduleId });

    const local = fresh("never published");
    const onRo = await ro.compile(src(local));
    expect(onRo).to.include({ ok: true, cacheHit: false });
    await new Promise((r) => setTimeout(r, 500));
    expect(await redis.client.exists(recordKey(onRo.moduleId))).to.equal(0);

    // A host took the lease on this id and died: B waits for the lease to lapse, then compiles itself.
    const leaseMs = 1_500;
    await redis.client.set(`${REMOTE_KEY_PREFIX}lease:${onRo.moduleId}`, "dead-host", "PX", leaseMs);
    const started = Date.now();
    const onB = await b.compile(src(local));
    expect(onB).to.include({ ok: true, cacheHit: false, moduleId: onRo.moduleId });
    expect(Date.now() - started).to.be.greaterThan(leaseMs - 200);
    expect(rustcRuns(b, onRo.moduleId)).to.equal(1);
  });

  it("Redis frozen (no answers) or stopped mid-test: calls still succeed locally; after a restart the daemons reconnect", async function () {
    const opTimeoutMs = 1_500;
    const fast = await daemonWith(["--remote-cache-timeout-ms", String(opTimeoutMs)]);
    redis.process.kill("SIGSTOP");
    try {
      // An id this daemon lacks: the first lookup waits out the operation timeout, the next ones do not wait at all.
      const unknown = randomBytes(32).toString("hex");
      const timings: number[] = [];
      for (let i = 0; i < 3; i++) {
        const began = Date.now();
        expect((await rejection(fast.execute({ target: moduleTarget(unknown) }))).reason).to.equal("MODULE_NOT_FOUND");
        timings.push(Date.now() - began);
      }
      expect(timings[0], `lookups took ${timings.join(", ")} ms`).to.be.greaterThan(opTimeoutMs - 100);
      expect(Math.max(timings[1]!, timings[2]!), `lookups took ${timings.join(", ")} ms`).to.be.lessThan(opTimeoutMs - 100);
      const started = Date.now();
      const frozen = await fast.compile(src(fresh("while frozen")));
      expect(frozen).to.include({ ok: true, cacheHit: false });
      const run = await fast.execute({ target: sourceTarget(fresh("frozen run")) });
      expect(Buffer.from(run.stdout).toString()).to.equal("frozen run\n");
      expect(Date.now() - started).to.be.lessThan(60_000);
    } finally {
      redis.process.kill("SIGCONT");
    }
    await redis.stop({ keepDir: true });
    const down = await b.compile(src(fresh("while down")));
    expect(down).to.include({ ok: true, cacheHit: false });
    const run = await b.execute({ target: moduleTarget(down.moduleId) });
    expect(Buffer.from(run.stdout).toString()).to.equal("while down\n");
    expect(b.logs()).to.contain("remote cache unavailable");

    await redis.restart();
    await until(
      "the daemons to reconnect",
      () => logLines(a, "remote cache connected").length >= 2 && logLines(b, "remote cache connected").length >= 2,
    );
    const source = fresh("after restart");
    const onA = await a.compile(src(source));
    await uploaded(onA.moduleId);
    expect(await b.compile(src(source))).to.include({ cacheHit: true, moduleId: onA.moduleId });
  });

  it("a daemon whose Redis is unreachable at start serves anyway", async function () {
    const d = await startDaemon({
      args: ["--allow-unsigned", "--remote-cache", `unix://${path.join(keyDir, "nothing.sock")}`, "--remote-cache-key", keyFile],
    });
    daemons.push(d);
    const r = await d.compile(src(fresh("no redis")));
    expect(r).to.include({ ok: true, cacheHit: false });
  });

  it("refuses to start with a cluster key too short to be one", async function () {
    const weak = path.join(keyDir, "weak.key");
    await writeFile(weak, "hunter2\n");
    const failed = await startDaemon({ args: ["--allow-unsigned", "--remote-cache", redis.url, "--remote-cache-key", weak] }).then(
      (d) => {
        daemons.push(d);
        return "";
      },
      (e: unknown) => String(e),
    );
    expect(failed).to.match(/--remote-cache-key: .*at least 32/);
  });
});
