import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { REPO_ROOT, runPython } from "../helpers/python.js";

const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));

function run(file: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, [...args], (e, _out, stderr) => (e ? reject(new Error(`${file} failed: ${stderr}`)) : resolve())),
  );
}

describe("the Python client (clients/python) against a real daemon", function () {
  this.timeout(240_000);
  let daemon: TestDaemon | undefined;
  let keys: string;

  before(async () => {
    // Built the documented way: Debian's protoc and grpc_python_plugin.
    await run(path.join(REPO_ROOT, "clients/python/generate"), []);
    keys = await mkdtemp(path.join(tmpdir(), "py-client-keys-"));
    await run(process.execPath, [SANDBOXCTL, "keygen", "--id", "py-signer", "--out", keys]);
    daemon = await startDaemon({ args: ["--trusted-keys", keys] });
  });

  after(async () => {
    await daemon?.stop();
    await rm(keys, { recursive: true, force: true });
  });

  it("compiles, runs and streams with policies it signs, receives an Execute response over 4 MiB, and raises ErrorInfo as a typed exception", async () => {
    const r = await runPython([
      path.join(REPO_ROOT, "clients/python/tests/drive_daemon.py"),
      daemon!.socketPath,
      path.join(keys, "py-signer.key"),
    ]);
    const out = JSON.parse(r.stdout || "{}") as Record<string, unknown>;
    expect(out["error"], String(out["trace"] ?? r.stderr)).to.equal(undefined);
    expect(out["info"]).to.deep.include({ keys: ["py-signer"], toolchain: true });
    expect(out["broken"]).to.deep.equal({ ok: false, codes: ["E0308"] });
    expect(out["run"]).to.deep.equal({ exit: 0, stdout: 'ctx ["a1"] hi\n', stderr: "note on stderr\n" });
    expect(out["events"]).to.include.members(["started", "stdout", "stderr", "finished"]);
    expect((out["events"] as string[])[0]).to.equal("started");
    expect((out["events"] as string[]).at(-1)).to.equal("finished");
    expect(out["bigStdoutBytes"]).to.equal(6 * 1024 * 1024);
    expect(out["tampered"]).to.deep.equal({ code: "UNAUTHENTICATED", reason: "POLICY_BAD_SIGNATURE" });
    expect(out["mismatch"]).to.deep.include({ code: "PERMISSION_DENIED", reason: "POLICY_MODULE_MISMATCH" });
  });
});
