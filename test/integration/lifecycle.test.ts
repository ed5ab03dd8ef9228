import { expect } from "chai";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { SANDBOXD_BIN, startDaemon } from "../helpers/daemon.js";

describe("daemon lifecycle", function () {
  it("logs where it listens, and on SIGTERM exits 0 and removes its socket", async function () {
    const daemon = await startDaemon();
    expect(existsSync(daemon.socketPath)).to.equal(true);
    expect(daemon.logs()).to.contain(`sandboxd listening on unix://${daemon.socketPath}`);
    const socketPath = daemon.socketPath;
    daemon.client.close();
    daemon.process.kill("SIGTERM");
    const code = await new Promise((resolve) => daemon.process.once("exit", resolve));
    expect(code).to.equal(0);
    expect(existsSync(socketPath)).to.equal(false);
    await daemon.stop();
  });

  it("replaces a stale socket file left by a crashed daemon", async function () {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-stale-"));
    try {
      const socketPath = path.join(dir, "stale.sock");
      // A socket file with no listener, as a SIGKILLed daemon leaves behind.
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await writeFile(path.join(dir, "marker"), "");
      const daemon = await startDaemon({ args: ["--allow-unsigned", "--listen", `unix://${socketPath}`] });
      expect(daemon.logs()).to.contain("sandboxd listening on");
      await daemon.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses to steal the socket of a live daemon", async function () {
    const first = await startDaemon();
    try {
      const child = spawn(process.execPath, [SANDBOXD_BIN, "--allow-unsigned", "--listen", `unix://${first.socketPath}`], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise((resolve) => child.once("exit", resolve));
      expect(code).to.equal(1);
      expect(stderr).to.contain("already listening");
      // The first daemon is untouched.
      const r = await first.compile({ input: { $case: "source", value: "fn main() {}" } });
      expect(r.ok).to.equal(true);
    } finally {
      await first.stop();
    }
  });

  it("rejects unknown flags with usage and exit code 2", async function () {
    const child = spawn(process.execPath, [SANDBOXD_BIN, "--no-such-flag"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.once("exit", resolve));
    expect(code).to.equal(2);
    expect(stderr).to.contain("usage: sandboxd");
  });
});
