import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { get } from "node:http";
import path from "node:path";
import { script } from "../helpers/fixtures.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { DEBIAN_PYTHON } from "../helpers/python.js";

/** GETs a URL on loopback; resolves to status and body. */
function fetchText(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (response) => {
      let body = "";
      response.on("data", (d: Buffer) => (body += d.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

/** The value of one sample line of a Prometheus text page, or undefined. */
function sample(page: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of page.split("\n")) {
    if (!line.startsWith(name + "{") && line.split(" ")[0] !== name) continue;
    const wanted = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) return Number(line.split(" ").at(-1));
  }
  return undefined;
}

/** JSON log lines whose message is `message`. */
function logLines(daemon: TestDaemon, message: string): Record<string, unknown>[] {
  return daemon
    .logs()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l["message"] === message);
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("operations: metrics, audit log, socket access, sd_notify", function () {
  this.timeout(120_000);
  let daemon: TestDaemon | undefined;

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  it("--metrics-listen serves Prometheus text with go-grpc-prometheus names, run and cache counters, and no module ids", async () => {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--metrics-listen", "127.0.0.1:0"] });
    const [, address] = /sandboxd metrics on http:\/\/([^/]+)\/metrics/.exec(daemon.logs()) ?? [];
    expect(address, daemon.logs()).to.match(/^127\.0\.0\.1:\d+$/);
    const compiled = await daemon.compile({ input: { $case: "source", value: script("exit_42") } });
    const result = await daemon.execute({ target: moduleTarget(compiled.moduleId) });
    expect(result.exitCode).to.equal(42);
    await daemon.execute({ target: moduleTarget("not-an-id") }).catch(() => undefined);
    const page = await fetchText(`http://${address}/metrics`);
    expect(page.status).to.equal(200);
    const body = page.body;
    const execute = { grpc_type: "unary", grpc_service: "sandbox.v1.SandboxService", grpc_method: "Execute" };
    expect(sample(body, "grpc_server_handled_total", { ...execute, grpc_code: "OK" })).to.equal(1);
    expect(sample(body, "grpc_server_handled_total", { ...execute, grpc_code: "InvalidArgument" })).to.equal(1);
    expect(sample(body, "grpc_server_started_total", execute)).to.equal(2);
    expect(sample(body, "grpc_server_handling_seconds_count", execute)).to.equal(2);
    expect(sample(body, "sandboxd_errors_total", { reason: "INVALID_MODULE_ID" })).to.equal(1);
    expect(sample(body, "sandboxd_compiles_total", { result: "ok" })).to.equal(1);
    expect(sample(body, "sandboxd_compile_duration_seconds_count", { cache: "miss" })).to.equal(1);
    expect(sample(body, "sandboxd_cache_requests_total", { layer: "disk", result: "miss" })).to.equal(1);
    expect(sample(body, "sandboxd_cache_requests_total", { layer: "memory", result: "miss" })).to.equal(1);
    expect(sample(body, "sandboxd_executions_total", { method: "Execute", outcome: "exited" })).to.equal(1);
    expect(sample(body, "sandboxd_guest_duration_seconds_count", {})).to.equal(1);
    expect(sample(body, "sandboxd_workers_busy", {})).to.equal(0);
    expect(sample(body, "sandboxd_execution_queue_depth", {})).to.equal(0);
    expect(sample(body, "sandboxd_workers", {})).to.be.above(0);
    expect(body, "no module id in any label").to.not.include(compiled.moduleId);
    expect((await fetchText(`http://${address}/`)).status).to.equal(404);
  });

  it("the audit log has one line per call (ids, outcome, exit code, durations, cache hit, peer) and never the script's input or output", async () => {
    daemon = await startDaemon();
    const secret = "do-not-log-7f3a";
    const compiled = await daemon.compile({ input: { $case: "source", value: script("echo_json") } });
    const result = await daemon.execute({
      target: moduleTarget(compiled.moduleId),
      stdin: Buffer.from(JSON.stringify({ secret })),
      env: new Map([["GREETING", secret]]),
    });
    expect(Buffer.from(result.stdout).toString()).to.include(secret);
    const line = await waitFor("the Execute audit line", () => logLines(daemon!, "call").find((l) => l["method"] === "Execute"));
    expect(line).to.include({
      method: "Execute",
      moduleId: compiled.moduleId,
      outcome: "exited",
      exitCode: 0,
      memoryHit: false,
      policyId: "",
      keyId: "",
    });
    expect(line["executionId"]).to.match(/^[0-9a-f-]{36}$/);
    expect(line["durationUs"]).to.be.a("number");
    expect(line["peer"]).to.be.a("string");
    const compileLine = logLines(daemon, "call").find((l) => l["method"] === "Compile");
    expect(compileLine).to.include({ outcome: "compiled", cacheHit: false, moduleId: compiled.moduleId });
    expect(daemon.logs()).to.not.include(secret);
  });

  it("refusals are audited at warn with their reason and key id; a key reload logs the key ids", async () => {
    const keys = await mkdtemp(path.join(tmpdir(), "sandboxd-keys-"));
    after(() => rm(keys, { recursive: true, force: true }));
    daemon = await startDaemon({ args: ["--trusted-keys", keys] });
    const refused = await daemon
      .execute({
        target: moduleTarget("a".repeat(64)),
        policy: { policy: Buffer.from("x"), keyId: "stranger", signature: Buffer.alloc(64) },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(refused).to.be.an("error");
    const line = await waitFor("the refusal", () => logLines(daemon!, "refused")[0]);
    expect(line).to.include({ level: "warn", method: "Execute", reason: "POLICY_UNKNOWN_KEY", keyId: "stranger", outcome: "refused" });
    expect(JSON.stringify(line)).to.not.include(Buffer.alloc(64).toString("base64"));
    daemon.process.kill("SIGHUP");
    const reload = await waitFor("the reload line", () => logLines(daemon!, "trusted keys reloaded")[0]);
    expect(reload["keyIds"]).to.deep.equal([]);
  });

  it("--socket-group and --socket-mode give the socket its group and mode before the daemon says it listens; the default is 0600", async () => {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--socket-group", String(process.getgid!())] });
    const grouped = await stat(daemon.socketPath);
    expect((grouped.mode & 0o777).toString(8)).to.equal("660");
    expect(grouped.gid).to.equal(process.getgid!());
    await daemon.stop();
    daemon = await startDaemon({ args: ["--allow-unsigned", "--socket-mode", "0640"] });
    expect(((await stat(daemon.socketPath)).mode & 0o777).toString(8)).to.equal("640");
    await daemon.stop();
    daemon = await startDaemon();
    expect(((await stat(daemon.socketPath)).mode & 0o777).toString(8)).to.equal("600");
  });

  it("with NOTIFY_SOCKET set the daemon sends READY=1 (with its MAINPID) once it listens, and STOPPING=1 when told to stop", async () => {
    const dir = path.join(process.env["TMPDIR"] ?? "/tmp", `notify-${process.pid}-${Date.now()}`);
    const notifySocket = path.join(dir, "notify.sock");
    // Node has no unix datagram sockets: python3 plays systemd's side.
    const listener = spawn(
      DEBIAN_PYTHON,
      [
        "-u",
        "-c",
        "import os,socket,sys\nos.makedirs(sys.argv[1],exist_ok=True)\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[2])\nprint('BOUND',flush=True)\nwhile True:\n  m=s.recv(4096).decode()\n  print(repr(m),flush=True)\n  if 'STOPPING=1' in m: break",
        dir,
        notifySocket,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let heard = "";
    listener.stdout.on("data", (d: Buffer) => (heard += d.toString()));
    try {
      await waitFor("the notify socket", () => (heard.includes("BOUND") ? true : undefined));
      daemon = await startDaemon({ env: { NOTIFY_SOCKET: notifySocket } });
      await waitFor("READY=1", () => (heard.includes("READY=1") ? true : undefined));
      expect(heard).to.include(`MAINPID=${daemon.process.pid}`);
      expect(heard).to.include("STATUS=listening on unix://");
      await daemon.stop();
      daemon = undefined;
      await waitFor("STOPPING=1", () => (heard.includes("STOPPING=1") ? true : undefined));
    } finally {
      listener.kill();
      await import("node:fs/promises").then((fs) => fs.rm(dir, { recursive: true, force: true }));
    }
  });
});
