import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ModuleOrigin } from "../../src/gen/grpc/sandbox/v1/admin.js";
import { Outcome, type ExecuteEvent } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { buildModule, call, DROP, i32, store32, WASI } from "../fixtures/hostile/wasm-builder.js";
import { script } from "../helpers/fixtures.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { listServices } from "../helpers/reflection.js";
import { rawUnaryCall } from "../helpers/raw-grpc.js";

const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));
const run = promisify(execFile);

/** A hand-made guest printing `text`: a distinct module (and id) per text, registered in milliseconds. */
function printing(text: string): Buffer {
  const bytes = [...Buffer.from(text)];
  return Buffer.from(
    buildModule({
      imports: [WASI.fd_write],
      memory: { min: 1 },
      data: [{ offset: 16, bytes }],
      funcs: [
        {
          params: [],
          results: [],
          body: [...store32(0, 16), ...store32(4, bytes.length), ...i32(1), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP],
        },
      ],
    }),
  );
}

async function upload(daemon: TestDaemon, text: string): Promise<string> {
  const response = await daemon.compile({ input: { $case: "wasm", value: printing(text) } });
  expect(response.ok).to.equal(true);
  return response.moduleId;
}

/** The `.mod` entries in a cache dir. */
async function entriesOnDisk(cacheDir: string): Promise<string[]> {
  return (await readdir(path.join(cacheDir, "modules"))).filter((n) => n.endsWith(".mod"));
}

/** The JSON log lines of a daemon. */
function logLines(daemon: TestDaemon): Record<string, unknown>[] {
  return daemon
    .logs()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const ABSENT_ID = "ab".repeat(32);

describe("AdminService on the admin socket", function () {
  this.timeout(180_000);
  let daemon: TestDaemon | undefined;
  let cacheDir: string;

  beforeEach(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "sandboxd-admin-cache-"));
  });

  afterEach(async function () {
    await daemon?.stop();
    daemon = undefined;
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("lists and describes modules: origin, size, created, last used, hits, toolchain fingerprint", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const admin = daemon.admin!;
    const before = Date.now();
    const compiled = await daemon.compile({ input: { $case: "source", value: script("exit_42") } });
    expect(compiled.ok).to.equal(true);
    const uploaded = await upload(daemon, "uploaded\n");
    // Two cache hits: a Compile answered from the cache and an Execute.
    expect((await daemon.compile({ input: { $case: "source", value: script("exit_42") } })).cacheHit).to.equal(true);
    expect((await daemon.execute({ target: moduleTarget(compiled.moduleId) })).exitCode).to.equal(42);

    const page = await admin.listModules();
    expect(page.modules.map((m) => m.moduleId)).to.deep.equal([compiled.moduleId, uploaded].sort());
    expect(page).to.deep.include({ nextPageToken: "", cachedModules: 2, blockedModules: 0 });
    const source = page.modules.find((m) => m.moduleId === compiled.moduleId)!;
    expect(source).to.deep.include({ cached: true, origin: ModuleOrigin.MODULE_ORIGIN_SOURCE, hitCount: 2, pinned: false, blocked: false });
    expect(source.sizeBytes).to.be.greaterThan(1000);
    expect(source.createdUnixMs).to.be.within(before - 1000, Date.now());
    expect(source.lastUsedUnixMs).to.be.at.least(source.createdUnixMs);
    const upload_ = page.modules.find((m) => m.moduleId === uploaded)!;
    expect(upload_).to.deep.include({ cached: true, origin: ModuleOrigin.MODULE_ORIGIN_UPLOAD, hitCount: 0 });
    expect(page.cachedBytes).to.equal(source.sizeBytes + upload_.sizeBytes);

    const details = await admin.getModule(compiled.moduleId);
    expect(details.module).to.deep.equal(source);
    expect(details.toolchainFingerprint).to.match(/^[0-9a-f]{64}$/);
    expect(details.toolchain).to.match(/^rustc \d+\.\d+\.\d+.*, wasm32-wasip?1?/);
    const uploadDetails = await admin.getModule(uploaded);
    expect(uploadDetails.toolchainFingerprint).to.equal("");
  });

  it("lists a cached compile failure as one, and evicting it makes Compile run rustc again", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const broken = 'fn main() { let x: u32 = "not a number"; }';
    expect((await daemon.compile({ input: { $case: "source", value: broken } })).ok).to.equal(false);
    const [failure] = (await daemon.admin!.listModules()).modules;
    expect(failure).to.deep.include({ compileFailed: true, origin: ModuleOrigin.MODULE_ORIGIN_SOURCE, cached: true });
    expect((await daemon.compile({ input: { $case: "source", value: broken } })).cacheHit).to.equal(true);
    await daemon.admin!.evictModule(failure!.moduleId);
    expect((await daemon.compile({ input: { $case: "source", value: broken } })).cacheHit).to.equal(false);
  });

  it("pages through modules in id order with page_size and page_token", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const ids = [];
    for (const text of ["a\n", "b\n", "c\n"]) ids.push(await upload(daemon, text));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await daemon.admin!.listModules({ pageSize: 2, pageToken });
      expect(page.modules.length).to.be.at.most(2);
      seen.push(...page.modules.map((m) => m.moduleId));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(pages).to.equal(2);
    expect(seen).to.deep.equal(ids.sort());
  });

  it("evicts a module from memory and disk: Execute by id then answers MODULE_NOT_FOUND", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const id = await upload(daemon, "evict me\n");
    // Run it once so a compiled copy sits in memory: only disk eviction would leave it runnable.
    expect((await daemon.execute({ target: moduleTarget(id) })).stdout.toString()).to.equal("evict me\n");
    const evicted = await daemon.admin!.evictModule(id);
    expect(evicted).to.deep.equal({ evictedFromDisk: true, evictedFromMemory: true });
    expect(await entriesOnDisk(cacheDir)).to.deep.equal([]);
    const refused = await rejection(daemon.execute({ target: moduleTarget(id) }));
    expect(refused).to.deep.include({ code: status.NOT_FOUND, reason: "MODULE_NOT_FOUND" });
    expect(await rejection(daemon.admin!.evictModule(id))).to.deep.include({ code: status.NOT_FOUND, reason: "MODULE_NOT_FOUND" });
    // Registering it again brings it back.
    expect(await upload(daemon, "evict me\n")).to.equal(id);
    expect((await daemon.execute({ target: moduleTarget(id) })).outcome).to.equal(Outcome.OUTCOME_EXITED);
  });

  it("ClearCache empties memory and disk while a run in flight finishes", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const compiled = await daemon.compile({ input: { $case: "source", value: script("print_sleep_print") } });
    const other = await upload(daemon, "other\n");
    expect((await daemon.execute({ target: moduleTarget(other) })).outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(await entriesOnDisk(cacheDir)).to.have.length(2);

    // The guest prints "first", sleeps 1.5 s, prints "second": clear while it sleeps.
    const stream = daemon.client.streamOutput(executeRequest({ target: moduleTarget(compiled.moduleId) }));
    const events: ExecuteEvent[] = [];
    let cleared: Promise<unknown> | undefined;
    const ended = new Promise<void>((resolve, reject) => {
      stream.on("data", (event: ExecuteEvent) => {
        events.push(event);
        if (event.event?.$case === "stdout" && !cleared) cleared = daemon!.admin!.clearCache();
      });
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    await ended;
    expect(cleared, "the guest never printed").to.not.equal(undefined);
    expect(await cleared).to.deep.include({ modulesRemoved: 2 });
    const finished = events.at(-1)?.event;
    expect(finished?.$case).to.equal("finished");
    if (finished?.$case !== "finished") return;
    expect(finished.value.outcome).to.equal(Outcome.OUTCOME_EXITED);
    const stdout = Buffer.concat(events.flatMap((e) => (e.event?.$case === "stdout" ? [e.event.value] : []))).toString();
    expect(stdout).to.equal("first\nsecond\n");

    expect(await entriesOnDisk(cacheDir)).to.deep.equal([]);
    expect((await daemon.admin!.listModules()).modules).to.deep.equal([]);
    // Both were in memory (each had run): neither may run from there now.
    for (const id of [compiled.moduleId, other]) {
      expect(await rejection(daemon.execute({ target: moduleTarget(id) }))).to.deep.include({ reason: "MODULE_NOT_FOUND" });
    }
  });

  it("a pinned module outlives LRU eviction that takes every unpinned one; unpinned, it goes", async function () {
    daemon = await startDaemon({ cacheDir, admin: [], args: ["--allow-unsigned", "--cache-max-bytes", "1500"] });
    const pinned = await upload(daemon, "pinned\n");
    const info = await daemon.admin!.pinModule(pinned);
    expect(info).to.deep.include({ moduleId: pinned, pinned: true, cached: true });
    // Each entry is ~300 bytes: five more push the oldest unpinned ones (and, unpinned, the first) out.
    const later: string[] = [];
    for (const text of ["1\n", "2\n", "3\n", "4\n", "5\n"]) later.push(await upload(daemon, text));
    const cached = (await daemon.admin!.listModules()).modules.map((m) => m.moduleId);
    expect(cached).to.include(pinned);
    expect(cached).to.not.include(later[0]);
    expect((await daemon.admin!.unpinModule(pinned)).pinned).to.equal(false);
    for (const text of ["6\n", "7\n", "8\n", "9\n", "10\n"]) await upload(daemon, text);
    expect((await daemon.admin!.listModules()).modules.map((m) => m.moduleId)).to.not.include(pinned);
  });

  it("a pin, hit counts and last-used times survive a restart", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const id = await upload(daemon, "kept\n");
    for (let i = 0; i < 3; i++) await daemon.execute({ target: moduleTarget(id) });
    await daemon.admin!.pinModule(id);
    const before = (await daemon.admin!.getModule(id)).module!;
    expect(before.hitCount).to.equal(3);
    expect(await daemon.stop()).to.equal(0);
    daemon = await startDaemon({ cacheDir, admin: [] });
    const after = (await daemon.admin!.getModule(id)).module!;
    expect(after).to.deep.include({
      pinned: true,
      hitCount: 3,
      origin: ModuleOrigin.MODULE_ORIGIN_UPLOAD,
      createdUnixMs: before.createdUnixMs,
    });
    expect(after.lastUsedUnixMs).to.equal(before.lastUsedUnixMs);
  });

  it("a blocked module is refused by Compile and Execute, also after a restart, until unblocked", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const source = script("exit_42");
    const compiled = await daemon.compile({ input: { $case: "source", value: source } });
    const uploaded = await upload(daemon, "blocked upload\n");
    expect((await daemon.execute({ target: moduleTarget(compiled.moduleId) })).exitCode).to.equal(42);

    const blocked = await daemon.admin!.blockModule(compiled.moduleId, "exfiltrates the context");
    expect(blocked).to.deep.include({ blocked: true, cached: false, blockReason: "exfiltrates the context" });
    await daemon.admin!.blockModule(uploaded);
    expect(await entriesOnDisk(cacheDir)).to.deep.equal([]);

    const expectBlocked = async (d: TestDaemon): Promise<void> => {
      const attempts: [string, () => Promise<unknown>][] = [
        ["Compile source", () => d.compile({ input: { $case: "source", value: source } })],
        ["Compile wasm", () => d.compile({ input: { $case: "wasm", value: printing("blocked upload\n") } })],
        ["Execute id", () => d.execute({ target: moduleTarget(compiled.moduleId) })],
        ["Execute source", () => d.execute({ target: sourceTarget(source) })],
        ["Execute uploaded id", () => d.execute({ target: moduleTarget(uploaded) })],
        ["StreamOutput id", () => d.stream({ target: moduleTarget(compiled.moduleId) })],
      ];
      for (const [what, attempt] of attempts) {
        const refused = await rejection(attempt());
        expect(refused, what).to.deep.include({ code: status.PERMISSION_DENIED, reason: "MODULE_BLOCKED" });
        // The operator's note is for operators only.
        expect(refused.details, what).to.not.contain("exfiltrates");
      }
    };
    await expectBlocked(daemon);
    expect(await daemon.stop()).to.equal(0);

    daemon = await startDaemon({ cacheDir, admin: [] });
    await expectBlocked(daemon);
    const listed = await daemon.admin!.listModules();
    expect(listed.blockedModules).to.equal(2);
    expect(listed.modules.find((m) => m.moduleId === compiled.moduleId)).to.deep.include({
      blocked: true,
      cached: false,
      blockReason: "exfiltrates the context",
    });

    expect((await daemon.admin!.unblockModule(compiled.moduleId)).blocked).to.equal(false);
    const again = await daemon.compile({ input: { $case: "source", value: source } });
    expect(again).to.deep.include({ ok: true, moduleId: compiled.moduleId });
    expect((await daemon.execute({ target: moduleTarget(compiled.moduleId) })).exitCode).to.equal(42);
  });

  it("refuses to start when the blocklist is unreadable, rather than run what it blocks", async function () {
    await writeFile(path.join(cacheDir, "blocklist.json"), '{"version":1,"blocked":{"not-an-id":{}}}');
    let error: unknown;
    try {
      daemon = await startDaemon({ cacheDir, admin: [] });
    } catch (e: unknown) {
      error = e;
    }
    expect(String(error)).to.match(/exited with 1 before listening/);
    expect(String(error)).to.contain("blocklist");
  });

  it("answers bad admin requests with catalogued errors", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const admin = daemon.admin!;
    const id = await upload(daemon, "x\n");
    const cases: [string, () => Promise<unknown>, number, string][] = [
      ["bad id", () => admin.getModule("nope"), status.INVALID_ARGUMENT, "INVALID_MODULE_ID"],
      ["uppercase id", () => admin.blockModule(id.toUpperCase()), status.INVALID_ARGUMENT, "INVALID_MODULE_ID"],
      ["unknown id", () => admin.getModule(ABSENT_ID), status.NOT_FOUND, "MODULE_NOT_FOUND"],
      ["pin of an uncached id", () => admin.pinModule(ABSENT_ID), status.NOT_FOUND, "MODULE_NOT_FOUND"],
      ["unpin of an uncached id", () => admin.unpinModule(ABSENT_ID), status.NOT_FOUND, "MODULE_NOT_FOUND"],
      ["evict of an unknown id", () => admin.evictModule(ABSENT_ID), status.NOT_FOUND, "MODULE_NOT_FOUND"],
      ["bad page token", () => admin.listModules({ pageToken: "../../etc" }), status.INVALID_ARGUMENT, "INVALID_REQUEST"],
      ["long block reason", () => admin.blockModule(id, "x".repeat(1025)), status.INVALID_ARGUMENT, "INVALID_REQUEST"],
    ];
    for (const [what, attempt, code, reason] of cases) expect(await rejection(attempt()), what).to.deep.include({ code, reason });
    // Bytes that are no protobuf at all.
    const garbage = await rawUnaryCall(daemon.adminSocketPath!, "sandbox.v1.AdminService", "GetModule", Buffer.from([0x0a, 0xff, 0xff]));
    expect(garbage.code).to.equal(status.INVALID_ARGUMENT);
    expect(garbage.reason).to.equal("INVALID_REQUEST");
    // The block with a too-long reason did not happen.
    expect((await admin.getModule(id)).module!.blocked).to.equal(false);
  });

  it("logs every admin call at warn level with the caller's uid, gid and pid", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const id = await upload(daemon, "audited\n");
    await daemon.admin!.pinModule(id);
    await rejection(daemon.admin!.getModule("bad"));
    const lines = logLines(daemon).filter((l) => typeof l["message"] === "string" && (l["message"] as string).startsWith("admin "));
    expect(lines.map((l) => [l["message"], l["result"]])).to.deep.equal([
      ["admin PinModule", "OK"],
      ["admin GetModule", "INVALID_MODULE_ID"],
    ]);
    for (const line of lines) {
      expect(line).to.deep.include({ level: "warn", callerUid: process.getuid!(), callerGid: process.getgid!(), callerPid: process.pid });
    }
    expect(lines[0]).to.deep.include({ moduleId: id });
  });

  it("the admin socket is mode 0600, or 0660 for --admin-socket-group", async function () {
    daemon = await startDaemon({ cacheDir, admin: [] });
    const own = await stat(daemon.adminSocketPath!);
    expect(own.isSocket()).to.equal(true);
    expect(own.mode & 0o777).to.equal(0o600);
    expect(own.uid).to.equal(process.getuid!());
    await daemon.stop();
    daemon = undefined;

    // A group other than the one the socket would get anyway, so the chown is seen.
    const group =
      process.getuid!() === 0
        ? "nogroup"
        : process.getgroups!()
            .find((g) => g !== process.getgid!())
            ?.toString();
    if (group === undefined) this.skip();
    daemon = await startDaemon({ cacheDir, admin: ["--admin-socket-group", group] });
    const shared = await stat(daemon.adminSocketPath!);
    expect(shared.mode & 0o777).to.equal(0o660);
    expect(shared.gid).to.not.equal(process.getgid!());
    expect((await daemon.admin!.listModules()).modules).to.deep.equal([]);
  });

  it("an unknown --admin-socket-group stops the start with a clear error", async function () {
    const error = await startDaemon({ cacheDir, admin: ["--admin-socket-group", "no-such-group-sandboxd"] }).then(
      (d) => {
        daemon = d;
        return undefined;
      },
      (e: unknown) => String(e),
    );
    expect(error).to.contain("--admin-socket-group: no group named");
  });
});

describe("the main socket does not serve AdminService", function () {
  this.timeout(60_000);
  let daemon: TestDaemon | undefined;

  after(async function () {
    await daemon?.stop();
  });

  it("reflection on the main socket lists SandboxService, not AdminService; the admin socket's lists AdminService", async function () {
    daemon = await startDaemon({ admin: [] });
    const main = await listServices(`unix://${daemon.socketPath}`);
    expect(main).to.include("sandbox.v1.SandboxService");
    expect(main).to.not.include("sandbox.v1.AdminService");
    const admin = await listServices(`unix://${daemon.adminSocketPath}`);
    expect(admin).to.include("sandbox.v1.AdminService");
    expect(admin).to.not.include("sandbox.v1.SandboxService");
  });

  it("AdminService calls on the main socket are UNIMPLEMENTED, and change nothing", async function () {
    const id = (await daemon!.compile({ input: { $case: "wasm", value: printing("main\n") } })).moduleId;
    const { connectAdmin } = await import("../../src/grpc/admin-client.js");
    const wrong = connectAdmin(`unix://${daemon!.socketPath}`);
    try {
      for (const attempt of [
        () => wrong.listModules(),
        () => wrong.clearCache(),
        () => wrong.blockModule(id),
        () => wrong.evictModule(id),
      ]) {
        expect((await rejection(attempt())).code).to.equal(status.UNIMPLEMENTED);
      }
    } finally {
      wrong.close();
    }
    expect((await daemon!.execute({ target: moduleTarget(id) })).stdout.toString()).to.equal("main\n");
    // And the admin socket does not serve SandboxService.
    const { connect } = await import("../../src/grpc/client.js");
    const onAdmin = connect(`unix://${daemon!.adminSocketPath}`);
    try {
      expect((await rejection(onAdmin.execute({ target: moduleTarget(id) }))).code).to.equal(status.UNIMPLEMENTED);
    } finally {
      onAdmin.close();
    }
  });
});

describe("sandboxctl admin", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let id: string;
  const ctl = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run(process.execPath, [SANDBOXCTL, "admin", "--socket", daemon.adminSocketPath!, ...args]);
      return { code: 0, stdout, stderr };
    } catch (e: unknown) {
      const failed = e as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };

  before(async function () {
    daemon = await startDaemon({ admin: [] });
    id = (await daemon.compile({ input: { $case: "wasm", value: printing("ctl\n") } })).moduleId;
  });

  after(async function () {
    await daemon.stop();
  });

  it("modules prints a table, and --json every field of every module", async function () {
    const table = await ctl("modules");
    expect(table.code, table.stderr).to.equal(0);
    const [header, row, footer] = table.stdout.trimEnd().split("\n");
    expect(header).to.match(/^MODULE\s+SIZE\s+ORIGIN\s+CREATED\s+LAST USED\s+HITS\s+FLAGS$/);
    expect(row).to.match(new RegExp(`^${id}\\s+\\d+ B\\s+upload\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ`));
    expect(footer).to.match(/^1 cached \(\d+ B of 2\.0 GiB\), 0 blocked$/);
    const json = await ctl("modules", "--json");
    const parsed = JSON.parse(json.stdout) as { modules: Record<string, unknown>[]; cachedModules: number };
    expect(parsed.cachedModules).to.equal(1);
    expect(parsed.modules[0]).to.deep.include({
      moduleId: id,
      cached: true,
      origin: "MODULE_ORIGIN_UPLOAD",
      pinned: false,
      blocked: false,
      hitCount: 0,
    });
  });

  it("module, pin, unpin, block, unblock, evict and clear do what they say", async function () {
    expect((await ctl("module", id)).stdout).to.match(new RegExp(`^module: +${id}\\n(.*\\n)*origin: +upload\\n`));
    expect((await ctl("pin", id)).stdout).to.equal(`pinned ${id} (now: pinned)\n`);
    expect((await daemon.admin!.getModule(id)).module!.pinned).to.equal(true);
    expect((await ctl("unpin", id)).stdout).to.equal(`unpinned ${id} (now: cached, not pinned)\n`);
    const blocked = await ctl("block", id, "--reason", "found bad", "--json");
    expect(JSON.parse(blocked.stdout)).to.deep.include({ moduleId: id, blocked: true, cached: false, blockReason: "found bad" });
    expect((await rejection(daemon.execute({ target: moduleTarget(id) }))).reason).to.equal("MODULE_BLOCKED");
    expect((await ctl("unblock", id)).code).to.equal(0);
    id = (await daemon.compile({ input: { $case: "wasm", value: printing("ctl\n") } })).moduleId;
    expect((await ctl("evict", id)).stdout).to.equal(`evicted ${id} (disk: removed, memory: was not there)\n`);
    id = (await daemon.compile({ input: { $case: "wasm", value: printing("ctl\n") } })).moduleId;
    expect((await ctl("clear")).stdout).to.match(/^cleared 1 modules \(\d+ B\)\n$/);
    expect((await daemon.admin!.listModules()).modules).to.deep.equal([]);
  });

  it("a refusal exits 1 with the catalogued reason; a usage mistake exits 2", async function () {
    const missing = await ctl("module", ABSENT_ID);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.match(/^sandboxctl: MODULE_NOT_FOUND: /);
    const usage = await ctl("pin");
    expect(usage.code).to.equal(2);
    expect(usage.stderr).to.contain("admin pin needs a module id");
    const nowhere = await run(process.execPath, [SANDBOXCTL, "admin", "--socket", path.join(daemon.dir, "absent.sock"), "modules"]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(nowhere).to.deep.include({ code: 1 });
    expect((nowhere as { stderr: string }).stderr).to.match(/^sandboxctl: cannot reach /);
  });
});
