import { expect } from "chai";
import { readdir, readFile, readlink } from "node:fs/promises";
import { startDaemon } from "../helpers/daemon.js";

/** How long Node takes at most to open its inspector after SIGUSR1 (it does so within milliseconds). */
const INSPECTOR_SETTLE_MS = 1_000;
/** Node's default inspector port, the one SIGUSR1 opens. */
const INSPECTOR_PORT = 9229;

/** TCP ports on which process `pid` itself holds a listening socket (from /proc, so another process's port never counts). */
async function listeningTcpPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match) inodes.add(match[1]!);
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const lines = (await readFile(table, "utf8").catch(() => "")).split("\n").slice(1);
    for (const line of lines) {
      const cols = line.trim().split(/\s+/);
      // cols: sl local_address rem_address st ... inode (10th column); 0A is LISTEN.
      if (cols.length < 10 || cols[3] !== "0A" || !inodes.has(cols[9]!)) continue;
      ports.push(parseInt(cols[1]!.split(":")[1]!, 16));
    }
  }
  return ports;
}

describe("debug signals (real daemon process)", function () {
  for (const signal of ["SIGUSR1", "SIGUSR2"] as const) {
    it(`${signal} opens no debugger port and does not stop the daemon`, async function () {
      const daemon = await startDaemon();
      try {
        const pid = daemon.process.pid!;
        expect(await listeningTcpPorts(pid)).to.deep.equal([]);
        daemon.process.kill(signal);
        await new Promise((resolve) => setTimeout(resolve, INSPECTOR_SETTLE_MS));
        expect(daemon.process.exitCode, daemon.logs()).to.equal(null);
        expect(daemon.process.signalCode, daemon.logs()).to.equal(null);
        const ports = await listeningTcpPorts(pid);
        expect(ports, `the daemon listens on TCP after ${signal} (${INSPECTOR_PORT} is the inspector)`).to.deep.equal([]);
        expect(daemon.logs()).to.not.contain("Debugger listening");
        expect(daemon.logs()).to.contain(`received ${signal}`);
        const r = await daemon.compile({ input: { $case: "source", value: "fn main() {}" } });
        expect(r.ok).to.equal(true);
      } finally {
        await daemon.stop();
      }
    });
  }
});
