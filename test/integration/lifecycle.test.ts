import { expect } from "chai";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { connect } from "../../src/grpc/client.js";
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

  it("SIGTERM the instant it says it listens still exits 0 and removes the socket (no start-up race)", async function () {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-race-"));
    try {
      for (let i = 0; i < 3; i++) {
        const socketPath = path.join(dir, `race-${i}.sock`);
        const child = spawn(
          process.execPath,
          [SANDBOXD_BIN, "--allow-unsigned", "--listen", `unix://${socketPath}`, "--cache-dir", path.join(dir, "cache")],
          {
            stdio: ["ignore", "ignore", "pipe"],
          },
        );
        let log = "";
        child.stderr.on("data", (d: Buffer) => {
          log += d.toString();
          // Synchronously, in the same tick the line arrives: as a supervisor polling the log would.
          if (log.includes("sandboxd listening on") && child.signalCode === null) child.kill("SIGTERM");
        });
        const code = await new Promise((resolve) => child.once("exit", (c) => resolve(c)));
        expect(code, log).to.equal(0);
        expect(existsSync(socketPath)).to.equal(false);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reports SERVING on grpc.health.v1 for the server and for sandbox.v1.SandboxService", async function () {
    const daemon = await startDaemon();
    const Health = makeGenericClientConstructor(healthService, "Health");
    const health = new Health(`unix://${daemon.socketPath}`, credentials.createInsecure());
    try {
      for (const name of ["", "sandbox.v1.SandboxService"]) {
        const reply = await new Promise<{ status: string }>((resolve, reject) =>
          health.check({ service: name }, (e: ServiceError | null, v: { status: string }) => (e ? reject(e) : resolve(v))),
        );
        expect(reply.status).to.equal("SERVING");
      }
    } finally {
      health.close();
      await daemon.stop();
    }
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

  it("keeps serving, and stops cleanly, after whoever read its log went away (closed stderr pipe)", async function () {
    const daemon = await startDaemon();
    // The log reader disappears: every later log line hits a broken pipe.
    daemon.process.stderr!.destroy();
    for (let i = 0; i < 3; i++) {
      const r = await daemon.compile({ input: { $case: "source", value: "fn main() {}" } });
      expect(r.ok).to.equal(true);
    }
    const pid = daemon.process.pid;
    expect(daemon.process.exitCode).to.equal(null);
    expect(await daemon.stop()).to.equal(0);
    expect(pid).to.be.a("number");
  });

  it("listens on TCP with --listen 127.0.0.1:0 and logs the port it got", async function () {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-tcp-"));
    const child = spawn(
      process.execPath,
      [SANDBOXD_BIN, "--allow-unsigned", "--listen", "127.0.0.1:0", "--cache-dir", path.join(dir, "cache")],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let log = "";
        child.stderr.on("data", (d: Buffer) => {
          log += d.toString();
          const match = /sandboxd listening on (127\.0\.0\.1:(\d+))/.exec(log);
          if (match && match[2] !== "0") resolve(match[1]!);
        });
        child.once("exit", (code) => reject(new Error(`exited ${code}: ${log}`)));
      });
      const client = connect(address);
      try {
        const compiled = await client.compile({ input: { $case: "source", value: 'fn main() { print!("over tcp"); }' } });
        const result = await client.execute({ target: { $case: "moduleId", value: compiled.moduleId } });
        expect(result.stdout.toString()).to.equal("over tcp");
      } finally {
        client.close();
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode === null ? child.once("exit", resolve) : resolve(undefined)));
      await rm(dir, { recursive: true, force: true });
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

describe("daemon configuration", function () {
  it("refuses to start when a default limit exceeds its ceiling", async function () {
    const child = spawn(
      process.execPath,
      [SANDBOXD_BIN, "--allow-unsigned", "--max-timeout-ms", "1000", "--default-timeout-ms", "5000", "--listen", "127.0.0.1:0"],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.once("exit", resolve));
    expect(code).to.equal(1);
    expect(stderr).to.contain("the default timeout limit (5000) exceeds its ceiling (1000)");
  });
});
