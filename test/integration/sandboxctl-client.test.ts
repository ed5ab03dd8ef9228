import { expect } from "chai";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Policy } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { parseSignedPolicyFile } from "../../src/policy/signed-policy-file.js";
import { formatDiagnostic } from "../../src/cli/sandboxctl-client.js";
import { Severity } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { SANDBOXD_BIN, startDaemon, type TestDaemon } from "../helpers/daemon.js";

const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));
const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/scripts/", import.meta.url));

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs sandboxctl with `input` on its stdin (not a terminal, so no colour or progress line). */
function sandboxctl(args: readonly string[], env: Readonly<Record<string, string>> = {}, input = ""): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SANDBOXCTL, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

const BROKEN = 'fn main() {\n    let x: i32 = "a";\n}\n';

describe("sandboxctl as a client of a running daemon", function () {
  this.timeout(180_000);
  let daemon: TestDaemon;
  let dir: string;
  let socket: Record<string, string>;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "sandboxctl-client-"));
    const keys = path.join(dir, "keys");
    expect((await sandboxctl(["keygen", "--id", "ci-signer", "--out", keys])).code).to.equal(0);
    daemon = await startDaemon({ args: ["--allow-unsigned", "--trusted-keys", keys] });
    socket = { SANDBOXD_SOCKET: daemon.socketPath };
    await writeFile(path.join(dir, "broken.rs"), BROKEN);
  });

  after(async () => {
    await daemon?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("compile of a broken file prints rustc's diagnostic under the user's file name, no colour off a terminal, and exits 1", async () => {
    const file = path.join(dir, "broken.rs");
    const r = await sandboxctl(["compile", file], socket);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.include("error[E0308]: mismatched types");
    expect(r.stderr).to.include(` --> ${file}:2:18`);
    expect(r.stderr).to.not.include("\x1b[");
    expect(r.stdout).to.equal("");
  });

  it("compile prints the module id on stdout; module-id prints the same id (from the cache)", async () => {
    const file = path.join(FIXTURES, "exit_42.rs");
    const compiled = await sandboxctl(["compile", file], socket);
    expect(compiled.code, compiled.stderr).to.equal(0);
    expect(compiled.stdout).to.match(/^[0-9a-f]{64}\n$/);
    const id = await sandboxctl(["module-id", "--socket", `unix://${daemon.socketPath}`, file]);
    expect(id).to.deep.include({ code: 0, stdout: compiled.stdout });
  });

  it("run streams the script's output with --context -, --arg and --env, and exits with its exit code", async () => {
    const echo = await sandboxctl(
      ["run", "--context", "-", "--arg", "a b", "--env", "GREETING=hi=there", path.join(FIXTURES, "echo_json.rs")],
      socket,
      '{"n":1}',
    );
    expect(echo.code, echo.stderr).to.equal(0);
    expect(JSON.parse(echo.stdout)).to.deep.equal({ input: { n: 1 }, args: ["a b"], greeting: "hi=there" });
    const exit42 = await sandboxctl(["run", path.join(FIXTURES, "exit_42.rs")], socket);
    expect(exit42.code).to.equal(42);
  });

  it("run exits with a documented code per outcome: 122 trap, 121 compile error, 124 timeout", async () => {
    const trap = await sandboxctl(["run", path.join(FIXTURES, "unreachable.rs")], socket);
    expect(trap.code).to.equal(122);
    expect(trap.stderr).to.include("sandboxctl: trap");
    const broken = await sandboxctl(["run", path.join(dir, "broken.rs")], socket);
    expect(broken.code).to.equal(121);
    expect(broken.stderr).to.include("error[E0308]");
    const keyFile = path.join(dir, "keys", "ci-signer.key");
    await writeFile(path.join(dir, "short.json"), JSON.stringify({ policyId: "short", timeoutMs: 300 }));
    const signed = await sandboxctl([
      "policy",
      "sign",
      "--key",
      keyFile,
      "--expires-in",
      "15m",
      "--out",
      path.join(dir, "short.signed.json"),
      path.join(dir, "short.json"),
    ]);
    expect(signed.code, signed.stderr).to.equal(0);
    const timeout = await sandboxctl(
      ["run", "--policy", path.join(dir, "short.signed.json"), path.join(FIXTURES, "infinite_loop.rs")],
      socket,
    );
    expect(timeout.code, timeout.stderr).to.equal(124);
  });

  it("run with a refused policy prints the catalogued reason and exits 1", async () => {
    await writeFile(
      path.join(dir, "forged.signed.json"),
      JSON.stringify({ key_id: "nobody", policy: Buffer.from("x").toString("base64"), signature: Buffer.alloc(64).toString("base64") }),
    );
    const r = await sandboxctl(["run", "--policy", path.join(dir, "forged.signed.json"), path.join(FIXTURES, "exit_42.rs")], socket);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^sandboxctl: POLICY_UNKNOWN_KEY: /);
  });

  it("policy sign: the key id defaults to the key file's name, --expires-in takes 90s / 15m / 1h, and a bad duration is a usage error", async () => {
    const keyFile = path.join(dir, "keys", "ci-signer.key");
    await writeFile(path.join(dir, "p.json"), JSON.stringify({ policyId: "p" }));
    for (const [text, seconds] of [
      ["90s", 90],
      ["15m", 900],
      ["1h", 3600],
      ["120", 120],
    ] as const) {
      const r = await sandboxctl(["policy", "sign", "--key", keyFile, "--expires-in", text, path.join(dir, "p.json")]);
      expect(r.code, r.stderr).to.equal(0);
      const parsed = parseSignedPolicyFile(r.stdout);
      if (!parsed.ok) expect.fail(parsed.error);
      expect(parsed.value.keyId).to.equal("ci-signer");
      const now = Math.floor(Date.now() / 1000);
      expect(Policy.decode(parsed.value.policy).expiresAtUnix).to.be.within(now + seconds - 10, now + seconds + 1);
    }
    const bad = await sandboxctl(["policy", "sign", "--key", keyFile, "--expires-in", "soon", path.join(dir, "p.json")]);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.include("--expires-in takes a positive duration");
  });

  it("keygen on an existing key is a one-line error naming the file, and changes nothing", async () => {
    const before = await readFile(path.join(dir, "keys", "ci-signer.key"), "utf8");
    const r = await sandboxctl(["keygen", "--id", "ci-signer", "--out", path.join(dir, "keys")]);
    expect(r.code).to.equal(1);
    expect(r.stderr.trim().split("\n")).to.have.length(1);
    expect(r.stderr).to.include("ci-signer.key already exists");
    expect(await readFile(path.join(dir, "keys", "ci-signer.key"), "utf8")).to.equal(before);
  });

  it("health and info describe the daemon: version, toolchain, limits, trusted key ids, cache and workers", async () => {
    const health = await sandboxctl(["health"], socket);
    expect(health).to.deep.include({ code: 0, stdout: "daemon: SERVING\ncompile: SERVING\n" });
    const info = await sandboxctl(["info", "--json"], socket);
    expect(info.code, info.stderr).to.equal(0);
    const parsed = JSON.parse(info.stdout) as Record<string, unknown>;
    const pkg = JSON.parse(await readFile(fileURLToPath(new URL("../../../package.json", import.meta.url)), "utf8")) as { version: string };
    expect(parsed["version"]).to.equal(pkg.version);
    expect(parsed["trustedKeyIds"]).to.deep.equal(["ci-signer"]);
    expect(parsed["toolchain"]).to.deep.include({ available: true, unavailableReason: "" });
    expect((parsed["toolchain"] as { version: string }).version).to.match(/^rustc \d+\.\d+/);
    expect(parsed["defaults"]).to.have.property("timeoutMs").that.is.above(0);
    expect((parsed["cache"] as { entries: number }).entries).to.be.above(0);
    expect((parsed["workers"] as { workers: number }).workers).to.be.above(0);
    const text = await sandboxctl(["info"], socket);
    expect(text.stdout).to.match(/^sandboxd \d+\.\d+\.\d+\ntoolchain: /);
  });

  it("no daemon at the socket: one clear line and exit 69, for a missing socket and for a file that is no socket", async () => {
    const missing = await sandboxctl(["info", "--socket", path.join(dir, "nothing.sock")]);
    expect(missing.code).to.equal(69);
    expect(missing.stderr).to.equal(
      `sandboxctl: no daemon listens on ${path.join(dir, "nothing.sock")}: no such socket (start sandboxd, or pass --socket or SANDBOXD_SOCKET)\n`,
    );
    const notSocket = await sandboxctl(["health"], { SANDBOXD_SOCKET: path.join(dir, "broken.rs") });
    expect(notSocket.code).to.equal(69);
    expect(notSocket.stderr.trim().split("\n")).to.have.length(1);
    expect(notSocket.stderr).to.include("is not a socket");
  });

  it("both binaries answer --version", async () => {
    const pkg = JSON.parse(await readFile(fileURLToPath(new URL("../../../package.json", import.meta.url)), "utf8")) as { version: string };
    expect((await sandboxctl(["--version"])).stdout).to.equal(`sandboxctl ${pkg.version}\n`);
    const daemonVersion = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [SANDBOXD_BIN, "--version"], (e, stdout) => (e ? reject(e) : resolve(stdout))),
    );
    expect(daemonVersion).to.equal(`sandboxd ${pkg.version}\n`);
  });

  it("diagnostics are coloured for a terminal: severity and gutter, reset after", () => {
    const text = formatDiagnostic(
      {
        severity: Severity.SEVERITY_ERROR,
        code: "E0308",
        message: "mismatched types",
        spans: [],
        rendered: "error[E0308]: mismatched types\n --> main.rs:2:18\n  |\n",
        children: [],
        explanation: "",
      },
      "broken.rs",
      true,
    );
    expect(text).to.include("\x1b[1;31merror[E0308]\x1b[0m");
    expect(text).to.include("broken.rs:2:18");
    expect(text).to.include("\x1b[1;34m-->\x1b[0m");
  });
});
