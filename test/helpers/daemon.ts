/**
 * Starts a real `sandboxd` process on a throwaway unix socket and talks to it
 * through a real grpc-js client. Every integration test uses this; nothing is mocked.
 */
import type { Metadata, ServiceError } from "@grpc/grpc-js";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type {
  SandboxServiceClient,
  CompileRequest,
  CompileResponse,
  ExecuteRequest,
  ExecuteResponse,
} from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { connect, type TimedEvent } from "../../src/grpc/client.js";
import { connectAdmin, type AdminClient } from "../../src/grpc/admin-client.js";
import { errorInfoOf } from "../../src/grpc/status.js";

/** The compiled daemon entry point. */
export const SANDBOXD_BIN = fileURLToPath(new URL("../../src/cli/sandboxd.js", import.meta.url));

/** How long a daemon may take to print its listening line. */
const START_TIMEOUT_MS = 20_000;

/** A running daemon under test. */
export interface TestDaemon {
  /** Scratch dir holding the socket and the cache; removed by stop(). */
  readonly dir: string;
  readonly socketPath: string;
  readonly process: ChildProcess;
  readonly client: SandboxServiceClient;
  /** The admin socket and a client of it, when started with `admin`. */
  readonly adminSocketPath: string | undefined;
  readonly admin: AdminClient | undefined;
  /** Everything the daemon logged so far (JSON lines on stderr). */
  logs(): string;
  compile(request: Partial<CompileRequest>): Promise<CompileResponse>;
  execute(request: Partial<ExecuteRequest>): Promise<ExecuteResponse>;
  /** Runs StreamOutput to the end, recording each event with its arrival time. */
  stream(request: Partial<ExecuteRequest>): Promise<TimedEvent[]>;
  /** SIGTERM, wait for exit, remove the scratch dir. Returns the exit code. */
  stop(): Promise<number | null>;
}

/** Options for startDaemon. */
export interface StartOptions {
  /** Extra flags; `--listen` and `--cache-dir` are set by the helper unless given. */
  readonly args?: readonly string[];
  /** Reuse a cache dir (to test restarts); by default a fresh one inside the scratch dir. */
  readonly cacheDir?: string;
  /** Extra environment for the daemon process. */
  readonly env?: Readonly<Record<string, string>>;
  /** Open an admin socket (`--admin-listen`) in the scratch dir, with these extra flags. */
  readonly admin?: readonly string[];
}

/** Starts `sandboxd` with --allow-unsigned (unless told otherwise via args) and waits until it listens. */
export async function startDaemon(options: StartOptions = {}): Promise<TestDaemon> {
  const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-test-"));
  const socketPath = path.join(dir, "sandboxd.sock");
  const adminSocketPath = options.admin ? path.join(dir, "admin.sock") : undefined;
  const args = [
    SANDBOXD_BIN,
    "--listen",
    `unix://${socketPath}`,
    "--cache-dir",
    options.cacheDir ?? path.join(dir, "cache"),
    ...(options.args ?? ["--allow-unsigned"]),
    ...(adminSocketPath ? ["--admin-listen", `unix://${adminSocketPath}`, ...(options.admin ?? [])] : []),
  ];
  const child = spawn(process.execPath, args, { env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  child.stdout!.on("data", (d: Buffer) => (logs += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sandboxd did not start in ${START_TIMEOUT_MS} ms:\n${logs}`)), START_TIMEOUT_MS);
    const check = (): void => {
      if (logs.includes("sandboxd listening on")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stderr!.on("data", check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sandboxd exited with ${code} before listening:\n${logs}`));
    });
  });
  const client = connect(`unix://${socketPath}`);
  const admin = adminSocketPath ? connectAdmin(`unix://${adminSocketPath}`) : undefined;
  return {
    dir,
    socketPath,
    process: child,
    client: client.raw,
    adminSocketPath,
    admin,
    logs: () => logs,
    compile: (r) => client.compile(r),
    execute: (r) => client.execute(r),
    stream: (r) => client.stream(r),
    stop: async () => {
      client.close();
      admin?.close();
      if (child.exitCode === null) child.kill("SIGTERM");
      const code = await exited;
      await rm(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/** A module_id target. */
export function moduleTarget(moduleId: string): ExecuteRequest["target"] {
  return { $case: "moduleId", value: moduleId };
}

/** A source target. */
export function sourceTarget(source: string): ExecuteRequest["target"] {
  return { $case: "source", value: source };
}

/** Asserts-friendly view of a failed call: gRPC code, message and the ErrorInfo reason. */
export async function rejection(promise: Promise<unknown>): Promise<{ code: number; details: string; reason: string | undefined }> {
  try {
    await promise;
  } catch (e: unknown) {
    const error = e as ServiceError;
    return { code: error.code, details: error.details, reason: errorInfoOf(error.metadata as Metadata | undefined)?.reason };
  }
  throw new Error("expected the call to fail, but it succeeded");
}
