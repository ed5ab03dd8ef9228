import { readdir, readlink } from "node:fs/promises";
import { createConnection, type Socket } from "node:net";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CONNECTION_CLOSE_GRACE_MS } from "../../src/limits.js";
import { connect } from "../../src/grpc/client.js";
import { rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";

const IDLE_TIMEOUT_MS = 500;
const SILENT_CONNECTIONS = 20;
const MAX_CONNECTIONS = 5;
/** Slack on top of the daemon's own timers for a loaded machine. */
const SLACK_MS = 3_000;
/** How long the daemon's start-up toolchain probe may take on a loaded machine. */
const PROBE_WAIT_MS = 60_000;
const HELLO = { input: { $case: "source" as const, value: "fn main() {}" } };

/** Descriptors of process `pid` that are sockets (its listener, its clients' connections, ...). */
async function socketCount(pid: number): Promise<number> {
  let count = 0;
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")).startsWith("socket:")) count++;
  }
  return count;
}

/**
 * The daemon's socket count once start-up is over. It probes the toolchain after it starts serving, and
 * the probe's child processes talk over socket pairs: a count taken during the probe drops by those when
 * it ends, which looked like accepted connections going missing.
 */
async function settledSocketCount(daemon: TestDaemon): Promise<number> {
  const pid = daemon.process.pid!;
  const ready = await eventually(async () => daemon.logs().includes("script SDK loaded"), PROBE_WAIT_MS);
  expect(ready, "the daemon's toolchain probe never finished").to.equal(true);
  let previous = await socketCount(pid);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const now = await socketCount(pid);
    if (now === previous) return now;
    previous = now;
  }
}

/** Polls until `predicate` holds or `ms` pass; returns whether it held. */
async function eventually(predicate: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return predicate();
}

/**
 * A connection that never says anything and never closes its end: allowHalfOpen
 * keeps it open even after the daemon's FIN, as a hostile or wedged client would.
 * It does read (and drop) what the daemon sends, so the test sees the daemon's FIN.
 */
async function silentConnection(socketPath: string): Promise<{ socket: Socket; ended: Promise<void>; closed: Promise<void> }> {
  const socket = createConnection({ path: socketPath, allowHalfOpen: true });
  socket.on("error", () => undefined);
  socket.resume();
  const ended = new Promise<void>((resolve) => socket.once("end", resolve));
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("close", () => reject(new Error("closed before connecting")));
  });
  return { socket, ended, closed };
}

describe("client connections (real daemon)", function () {
  this.timeout(PROBE_WAIT_MS + 60_000);
  let daemon: TestDaemon | undefined;
  const sockets: Socket[] = [];

  afterEach(async function () {
    for (const socket of sockets.splice(0)) socket.destroy();
    await daemon?.stop();
    daemon = undefined;
  });

  it("silent connections that never speak are closed after the idle timeout, freeing their descriptors", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--connection-idle-timeout-ms", String(IDLE_TIMEOUT_MS)] });
    const pid = daemon.process.pid!;
    const baseline = await settledSocketCount(daemon);
    const silent = [];
    for (let i = 0; i < SILENT_CONNECTIONS; i++) {
      const connection = await silentConnection(daemon.socketPath);
      sockets.push(connection.socket);
      silent.push(connection);
    }
    // Each peer sees the daemon's end of the connection: the daemon accepted it (one still in the backlog
    // gets no FIN) and closed it. Counting the accepted sockets instead raced with the idle timeout itself
    // on a loaded machine, where opening twenty connections can take longer than it.
    const allEnded = Promise.all(silent.map((c) => c.ended)).then(() => true);
    const waitMs = IDLE_TIMEOUT_MS + CONNECTION_CLOSE_GRACE_MS + SLACK_MS;
    expect(
      await Promise.race([allEnded, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), waitMs))]),
      "a silent connection was never closed",
    ).to.equal(true);
    const freed = await eventually(async () => (await socketCount(pid)) <= baseline, waitMs);
    expect(freed, `the daemon still holds ${(await socketCount(pid)) - baseline} of ${SILENT_CONNECTIONS} silent connections`).to.equal(
      true,
    );
    // And the daemon serves on.
    expect((await daemon.compile(HELLO)).ok).to.equal(true);
  });

  it("beyond --max-connections a new connection is closed on arrival, and a normal client is served once others close", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--max-connections", String(MAX_CONNECTIONS)] });
    const pid = daemon.process.pid!;
    const baseline = await settledSocketCount(daemon);
    for (let i = 0; i < MAX_CONNECTIONS; i++) sockets.push((await silentConnection(daemon.socketPath)).socket);
    expect(
      await eventually(async () => (await socketCount(pid)) >= baseline + MAX_CONNECTIONS, SLACK_MS),
      "the daemon accepted them",
    ).to.equal(true);

    // One more raw connection: the daemon closes it at once.
    const extra = await silentConnection(daemon.socketPath);
    sockets.push(extra.socket);
    const closedAtOnce = await Promise.race([
      extra.ended.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), SLACK_MS)),
    ]);
    expect(closedAtOnce, "the connection over the cap was not closed").to.equal(true);
    expect(await socketCount(pid)).to.be.at.most(baseline + MAX_CONNECTIONS);

    // A gRPC client over the cap fails fast (UNAVAILABLE) instead of taking a descriptor.
    const refused = await rejection(daemon.compile(HELLO));
    expect(refused.code).to.equal(status.UNAVAILABLE);
    expect(daemon.logs()).to.contain(`are open, the --max-connections cap`);

    // Once the silent ones go, a normal client is served.
    for (const socket of sockets.splice(0)) socket.destroy();
    expect(await eventually(async () => (await socketCount(pid)) <= baseline, SLACK_MS)).to.equal(true);
    // Its own subchannel: the shared one is still backing off from the refusal above.
    const client = connect(`unix://${daemon.socketPath}`, { "grpc.use_local_subchannel_pool": 1 });
    try {
      expect((await client.compile(HELLO)).ok).to.equal(true);
    } finally {
      client.close();
    }
  });

  it("a client with a call in flight longer than the idle timeout is not cut off", async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--connection-idle-timeout-ms", String(IDLE_TIMEOUT_MS)] });
    const compiled = await daemon.compile({
      input: { $case: "source", value: 'fn main() { std::thread::sleep(std::time::Duration::from_millis(1500)); println!("done"); }' },
    });
    expect(compiled.ok).to.equal(true);
    const response = await daemon.execute({ target: { $case: "moduleId", value: compiled.moduleId } });
    expect(response.stdout.toString()).to.equal("done\n");
    // The same client goes on after its connection was closed for idleness.
    await new Promise((resolve) => setTimeout(resolve, IDLE_TIMEOUT_MS + CONNECTION_CLOSE_GRACE_MS));
    expect((await daemon.compile(HELLO)).ok).to.equal(true);
  });
});
