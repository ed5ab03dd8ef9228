import { Server, ServerCredentials } from "@grpc/grpc-js";
import { createConnection, type ListenOptions } from "node:net";
import { chmod, chown, lstat, mkdir, unlink } from "node:fs/promises";
import path from "node:path";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Logger } from "../logger.js";
import { DEFAULT_CONNECTION_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, MAX_GRPC_MESSAGE_BYTES } from "../limits.js";
import { SandboxServiceService } from "../gen/grpc/sandbox/v1/sandbox.js";
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from "../request-limits.js";
import type { Sandbox } from "../sandbox.js";
import { ConnectionListener, type ConnectionLimits } from "./connection-listener.js";
import type { DaemonMetrics } from "../metrics/daemon-metrics.js";
import { auditLog, observers } from "./call-audit.js";
import { metricsInterceptor } from "./metrics-interceptor.js";
import { HealthService } from "./health-service.js";
import { serializeExecuteEvent } from "./output-event-encoding.js";
import { sandboxService } from "./service.js";
import { compileRequestDecoder, executeRequestDecoder, tolerantDecoder } from "./translate.js";

/** Fully qualified name of our service, as health checks and reflection know it. */
export const SERVICE_NAME = "sandbox.v1.SandboxService";

/** The standard health service, which reflection describes too. */
const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

/**
 * How long after it starts serving the server loads reflection: reading the descriptors takes the
 * event loop for a moment, and the first calls (a supervisor's health check) should not wait behind it.
 */
const REFLECTION_DELAY_MS = 250;

/** How long to wait when probing whether a socket file has a live listener. */
const SOCKET_PROBE_TIMEOUT_MS = 500;

/** A parsed --listen address. */
export type ListenAddress = { readonly kind: "unix"; readonly path: string } | { readonly kind: "tcp"; readonly hostPort: string };

/** Parses `unix:///abs/path.sock`, `unix:/abs/path`, or `HOST:PORT`; parsers return errors, callers throw. */
export function parseListenAddress(text: string): ListenAddress | Error {
  if (text.startsWith("unix:")) {
    const p = text.replace(/^unix:(\/\/)?/, "");
    if (!path.isAbsolute(p)) return new Error(`unix socket path must be absolute: ${text}`);
    return { kind: "unix", path: p };
  }
  if (/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(text)) return { kind: "tcp", hostPort: text };
  return new Error(`--listen takes unix:///path/to.sock or HOST:PORT, got ${JSON.stringify(text)}`);
}

/** Connection limits unless the operator sets them. */
export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  idleTimeoutMs: DEFAULT_CONNECTION_IDLE_TIMEOUT_MS,
};

/** The gRPC address string grpc-js binds or dials for a listen address. */
export function grpcTarget(address: ListenAddress): string {
  return address.kind === "unix" ? `unix://${address.path}` : address.hostPort;
}

/** A running gRPC server for a core. */
export class SandboxServer {
  private readonly server: Server;
  private readonly health: HealthService;
  private readonly shutdown = new AbortController();
  private readonly connections: ConnectionListener;
  private bound: ListenAddress | undefined;
  private reflectionTimer: NodeJS.Timeout | undefined;
  private compileAvailable = true;

  constructor(
    sandbox: Sandbox,
    private readonly logger: Logger,
    requestLimits: RequestLimits = DEFAULT_REQUEST_LIMITS,
    limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
    metrics?: DaemonMetrics,
  ) {
    this.server = new Server({
      ...(metrics ? { interceptors: [metricsInterceptor(metrics)] } : {}),
      "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_GRPC_MESSAGE_BYTES,
      // A connection with no call in flight gets GOAWAY; the listener then frees its descriptor even if the peer never answers.
      "grpc.max_connection_idle_ms": limits.idleTimeoutMs,
    });
    // The daemon accepts connections itself (to cap them) and hands each to grpc-js.
    const injector = this.server.createConnectionInjector(ServerCredentials.createInsecure());
    this.connections = new ConnectionListener((socket) => injector.injectConnection(socket), limits.maxConnections, logger);
    const base = SandboxServiceService;
    const service = {
      compile: { ...base.compile, requestDeserialize: compileRequestDecoder(base.compile.requestDeserialize) },
      execute: { ...base.execute, requestDeserialize: executeRequestDecoder(base.execute.requestDeserialize, requestLimits) },
      streamOutput: {
        ...base.streamOutput,
        requestDeserialize: executeRequestDecoder(base.streamOutput.requestDeserialize, requestLimits),
        responseSerialize: serializeExecuteEvent,
      },
      info: { ...base.info, requestDeserialize: tolerantDecoder(base.info.requestDeserialize) },
    };
    const audit = auditLog(logger);
    const observe = metrics ? observers(audit, (record) => metrics.observe(record)) : audit;
    this.server.addService(service, sandboxService(sandbox, logger, this.shutdown.signal, observe));
    this.health = new HealthService({ "": "NOT_SERVING", [SERVICE_NAME]: "NOT_SERVING" });
    this.health.addToServer(this.server);
  }

  /**
   * Adds server reflection, which lets generic clients discover the service without a copy of the proto.
   * Loaded once the daemon serves, so the first calls never wait behind reading the descriptors.
   */
  private async addReflection(): Promise<void> {
    const { addReflection, DescriptorIndex } = await import("./reflection-service.js");
    addReflection(this.server, DescriptorIndex.load([SERVICE_NAME, HEALTH_SERVICE_NAME]));
  }

  /** Binds and starts serving; returns the bound address (with the real port for HOST:0). */
  async listen(address: ListenAddress, access?: { readonly mode: number; readonly gid?: number }): Promise<string> {
    if (address.kind === "unix") await prepareSocketPath(address.path);
    const port = await this.connections.listen(listenOptions(address));
    // Before anyone is told it listens: until now only the daemon's user could connect (a fresh
    // socket's mode comes from the umask, and connecting needs write permission).
    if (address.kind === "unix" && access) {
      try {
        if (access.gid !== undefined) await chown(address.path, -1, access.gid);
        await chmod(address.path, access.mode);
      } catch (e: unknown) {
        this.connections.stopAccepting();
        await unlink(address.path).catch(() => undefined);
        throw new Error(
          `cannot give ${address.path} mode ${access.mode.toString(8)}${access.gid === undefined ? "" : ` and group ${access.gid}`}: ${e instanceof Error ? e.message : String(e)}`,
          { cause: e },
        );
      }
    }
    this.bound = address;
    this.health.setStatus("", "SERVING");
    this.health.setStatus(SERVICE_NAME, this.compileAvailable ? "SERVING" : "NOT_SERVING");
    this.reflectionTimer = setTimeout(() => {
      this.addReflection().catch((e: unknown) => this.logger.error("server reflection is unavailable", { error: String(e) }));
    }, REFLECTION_DELAY_MS);
    this.reflectionTimer.unref();
    return address.kind === "unix" ? grpcTarget(address) : address.hostPort.replace(/:\d+$/, `:${port}`);
  }

  /**
   * Compile cannot work on this host (its toolchain probe failed): the service
   * reports NOT_SERVING from now on, so readiness checks on it fail, while the
   * server as a whole ("") stays SERVING, since Execute of compiled modules
   * still works and a restart would not install the missing package.
   */
  markCompileUnavailable(): void {
    this.compileAvailable = false;
    if (this.bound) this.health.setStatus(SERVICE_NAME, "NOT_SERVING");
  }

  /**
   * Stops accepting calls, gives in-flight ones `graceMs` to finish, then
   * cancels the rest (their guests end as OUTCOME_CANCELLED) and removes the socket.
   */
  async close(graceMs: number): Promise<void> {
    clearTimeout(this.reflectionTimer);
    this.health.setStatus("", "NOT_SERVING");
    this.health.setStatus(SERVICE_NAME, "NOT_SERVING");
    this.connections.stopAccepting();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.warn(`grace period of ${graceMs} ms elapsed; cancelling the calls still running`);
        this.shutdown.abort(new SandboxError("SHUTTING_DOWN", "the daemon is shutting down"));
        this.server.forceShutdown();
        this.connections.destroyAll();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.bound?.kind === "unix") await unlink(this.bound.path).catch(() => undefined);
  }
}

/** What net.Server.listen takes for a listen address: the socket path, or HOST:PORT split (brackets off an IPv6 host). */
function listenOptions(address: ListenAddress): ListenOptions {
  if (address.kind === "unix") return { path: address.path };
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d+)$/.exec(address.hostPort);
  if (!match) throw new Error(`cannot listen on ${address.hostPort}`);
  return { host: match[1] ?? match[2], port: Number(match[3]) };
}

/**
 * Makes sure the socket's directory exists and no stale socket file is in the
 * way, but never steals the socket of a live daemon.
 */
export async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  const stat = await lstat(socketPath).catch(() => undefined);
  if (!stat) return;
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  if (await isListening(socketPath)) throw new Error(`another process is already listening on ${socketPath}`);
  await unlink(socketPath);
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    const done = (live: boolean): void => {
      socket.destroy();
      resolve(live);
    };
    socket.setTimeout(SOCKET_PROBE_TIMEOUT_MS, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
