/**
 * A real, throwaway `redis-server` (Debian's, installed by scripts/setup) for the shared-cache
 * tests: it listens only on a unix socket in a fresh temp dir (never TCP, never a system Redis),
 * keeps nothing on disk, and is stopped and removed by stop().
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";

/** How long redis-server may take to accept connections. */
const REDIS_START_TIMEOUT_MS = 10_000;

/** A running test Redis. */
export interface TestRedis {
  readonly dir: string;
  readonly socketPath: string;
  /** `--remote-cache` value for a daemon. */
  readonly url: string;
  /** A direct client, for looking at (and tampering with) what daemons stored. */
  readonly client: Redis;
  readonly process: ChildProcess;
  /** Starts the server again on the same socket after stop({ keepDir: true }). */
  restart(): Promise<void>;
  /** SIGTERM and wait; removes the temp dir unless told to keep it. */
  stop(options?: { keepDir?: boolean }): Promise<void>;
}

async function launch(dir: string, socketPath: string): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    ["--port", "0", "--unixsocket", socketPath, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`redis-server did not start:\n${out}`));
    }, REDIS_START_TIMEOUT_MS);
    const check = (): void => {
      // "Ready to accept connections tcp", or "...ready to accept connections at <socket>"
      if (/ready to accept connections/i.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}:\n${out}`));
    });
  });
  return child;
}

/** Starts a Redis on a unix socket in a new temp dir. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-redis-"));
  const socketPath = path.join(dir, "redis.sock");
  let child = await launch(dir, socketPath);
  const client = new Redis({ path: socketPath, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on("error", () => {}); // the tests stop the server on purpose
  const stopChild = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGCONT"); // in case a test froze it
    child.kill("SIGTERM");
    await exited;
  };
  return {
    dir,
    socketPath,
    url: `unix://${socketPath}`,
    client,
    get process() {
      return child;
    },
    restart: async () => {
      child = await launch(dir, socketPath);
    },
    stop: async (options = {}) => {
      await stopChild();
      if (!options.keepDir) {
        client.disconnect();
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** Writes a fresh cluster key file in `dir` and returns its path. */
export async function writeClusterKey(dir: string, name = "cluster.key"): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
  return file;
}
