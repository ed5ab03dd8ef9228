/**
 * A real `sandboxd` CLI process for the benchmarks: spawned like an operator
 * would (optionally with extra node flags such as --cpu-prof), readiness seen
 * through grpc.health.v1 exactly as a client would see it, RSS read from /proc.
 */
import { credentials, makeGenericClientConstructor, type Client, type ServiceDefinition } from "@grpc/grpc-js";
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { service as healthService } from "grpc-health-check";
import { connect, type SandboxClient } from "../src/grpc/client.js";

/** The compiled daemon entry point (dist/src/cli/sandboxd.js). */
export const SANDBOXD_BIN = fileURLToPath(new URL("../src/cli/sandboxd.js", import.meta.url));

/** How long the daemon may take to answer SERVING before the bench gives up. */
const START_TIMEOUT_MS = 30_000;
/** Pause between two health polls while the daemon starts. */
const HEALTH_POLL_INTERVAL_MS = 2;
/** Deadline of one health poll, so a half-started server cannot stall the loop. */
const HEALTH_CALL_DEADLINE_MS = 1_000;
/** How long a stopping daemon may take before it is killed (its CPU profile is written on a clean exit). */
const STOP_TIMEOUT_MS = 20_000;

/** The promise face of grpc.health.v1.Health/Check. */
export interface HealthClient {
  /** Resolves with the serving status, e.g. "SERVING"; rejects on transport errors. */
  check(service?: string): Promise<string>;
  close(): void;
}

type CheckCallback = (e: Error | null, response?: { status?: string | number }) => void;
type RawHealth = Client & { check(req: { service: string }, options: { deadline: number }, cb: CheckCallback): void };

/** Connects a Health client to a grpc-js target. */
export function connectHealth(target: string): HealthClient {
  const Ctor = makeGenericClientConstructor(healthService as unknown as ServiceDefinition, "Health");
  // grpc-js backs off ~1 s after a failed connect (the socket does not exist yet while the daemon
  // boots); a start-up probe must retry at its own poll interval, or it measures the backoff.
  const raw = new Ctor(target, credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": HEALTH_POLL_INTERVAL_MS,
    "grpc.max_reconnect_backoff_ms": HEALTH_POLL_INTERVAL_MS,
  }) as unknown as RawHealth;
  return {
    check: (service = "") =>
      new Promise((resolve, reject) =>
        raw.check({ service }, { deadline: Date.now() + HEALTH_CALL_DEADLINE_MS }, (e, response) =>
          e ? reject(e) : resolve(String(response?.status ?? "UNKNOWN")),
        ),
      ),
    close: () => raw.close(),
  };
}

/** Options of {@link BenchDaemon.start}. */
export interface BenchDaemonOptions {
  /** Scratch dir: the socket and (unless cacheDir is given) the cache live here. */
  readonly dir: string;
  readonly cacheDir?: string;
  /** Daemon flags besides --listen and --cache-dir. */
  readonly args?: readonly string[];
  /** Flags for node itself, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /** Name of the socket file inside dir (several daemons may share a dir). */
  readonly socketName?: string;
  /** The daemon entry point to run instead of this build's, e.g. another checkout's for a before/after comparison. */
  readonly bin?: string;
}

/** A daemon under benchmark. */
export class BenchDaemon {
  private constructor(
    readonly process: ChildProcess,
    readonly target: string,
    readonly client: SandboxClient,
    readonly health: HealthClient,
    /** Spawn → first SERVING answer, in ms. */
    readonly startMs: number,
    private readonly exited: Promise<number | null>,
    private readonly logs: () => string,
  ) {}

  /** Spawns the CLI and polls Health/Check until it answers SERVING. */
  static async start(options: BenchDaemonOptions): Promise<BenchDaemon> {
    const socketPath = path.join(options.dir, options.socketName ?? "sandboxd.sock");
    const target = `unix://${socketPath}`;
    const args = [
      ...(options.nodeArgs ?? []),
      options.bin ?? SANDBOXD_BIN,
      "--listen",
      target,
      "--cache-dir",
      options.cacheDir ?? path.join(options.dir, "cache"),
      "--log-level",
      "warn",
      ...(options.args ?? []),
    ];
    const started = performance.now();
    const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
    let logs = "";
    child.stderr!.on("data", (d: Buffer) => (logs += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    const health = connectHealth(target);
    try {
      for (;;) {
        if (exitedEarly) throw new Error(`sandboxd exited before SERVING:\n${logs}`);
        if (performance.now() - started > START_TIMEOUT_MS) throw new Error(`sandboxd not SERVING after ${START_TIMEOUT_MS} ms:\n${logs}`);
        const status = await health.check().catch(() => "UNREACHABLE");
        if (status === "SERVING") break;
        await new Promise((r) => setTimeout(r, HEALTH_POLL_INTERVAL_MS));
      }
    } catch (e: unknown) {
      health.close();
      child.kill("SIGKILL");
      throw e;
    }
    const startMs = performance.now() - started;
    return new BenchDaemon(child, target, connect(target), health, startMs, exited, () => logs);
  }

  /** The daemon's resident set size in MB, from /proc/<pid>/status VmRSS. */
  async rssMB(): Promise<number> {
    const status = await readFile(`/proc/${this.process.pid}/status`, "utf8");
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    if (!match) throw new Error(`no VmRSS in /proc/${this.process.pid}/status`);
    return Number(match[1]) / 1024;
  }

  /** What the daemon logged on stderr (warnings and errors only). */
  stderr(): string {
    return this.logs();
  }

  /** SIGTERM and wait for a clean exit (SIGKILL after a timeout). Returns the exit code. */
  async stop(): Promise<number | null> {
    this.client.close();
    this.health.close();
    if (this.process.exitCode === null) this.process.kill("SIGTERM");
    const timer = setTimeout(() => this.process.kill("SIGKILL"), STOP_TIMEOUT_MS);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
