/**
 * Wires the core and the gRPC server from a configuration, and owns their
 * lifetime. The CLI (src/cli/sandboxd.ts) and the tests both start daemons here.
 */
import { ReceiptSigner } from "./receipt/receipt.js";
import { homedir } from "node:os";
import path from "node:path";
import type { Logger } from "./logger.js";
import {
  DEFAULT_CEILING_MEMORY_BYTES,
  DEFAULT_CEILING_OUTPUT_BYTES,
  DEFAULT_CEILING_TIMEOUT_MS,
  DEFAULT_CEILING_WRITE_BYTES,
  DEFAULT_CEILING_FUEL,
  DEFAULT_CEILING_HTTP_REQUESTS,
  DEFAULT_CEILING_HTTP_RESPONSE_BYTES,
  DEFAULT_CEILING_HTTP_TIMEOUT_MS,
  DEFAULT_HTTP_TIMEOUT_MS,
  DEFAULT_MAX_HTTP_REQUESTS,
  DEFAULT_MAX_HTTP_RESPONSE_BYTES,
  DEFAULT_MAX_BUFFERED_BYTES,
  DEFAULT_MAX_CREATED_ENTRIES,
  DEFAULT_MAX_OUTPUT_BYTES,
  DEFAULT_MAX_QUEUED_EXECUTIONS,
  DEFAULT_MEMORY_CACHE_MAX_BYTES,
  DEFAULT_MAX_WRITE_BYTES,
  DEFAULT_MEMORY_LIMIT_BYTES,
  DEFAULT_TIMEOUT_MS,
  SHUTDOWN_GRACE_MS,
} from "./limits.js";
import { probeToolchain, type ToolchainProbe } from "./compiler/toolchain.js";
import type { CompilerSettings } from "./compiler/compiler.js";
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from "./request-limits.js";
import { TrustedKeys } from "./policy/trusted-keys.js";
import type { PolicyCeilings, PolicyDefaults } from "./policy/authorize.js";
import type { CidrRange } from "./runtime/net/address-rules.js";
import { DEFAULT_WORKERS, Sandbox } from "./sandbox.js";
import { SandboxServer, type ListenAddress } from "./grpc/server.js";
import { AdminServer } from "./grpc/admin-server.js";
import { resolveGroup } from "./unix-group.js";
import type { DaemonMetrics } from "./metrics/daemon-metrics.js";
import type { MetricsEndpoint } from "./metrics/metrics-server.js";
import type { ConnectionLimits } from "./grpc/connection-listener.js";
import type { RemoteCacheSettings } from "./cache/remote-cache.js";

/** Mode of the main unix socket with --socket-mode unset: the daemon's user only. */
export const DEFAULT_SOCKET_MODE = 0o600;
/** Mode of the main unix socket with --socket-group and no --socket-mode: that group may connect too. */
export const DEFAULT_GROUP_SOCKET_MODE = 0o660;

/** Who may connect to the main unix socket: its mode, and the group (name or gid) to give it. */
export interface SocketAccess {
  readonly mode: number;
  readonly group?: string;
}

/**
 * How long after it starts serving the daemon probes the toolchain (rustc start-ups, loading the
 * process library): the first calls, a supervisor's health check and the workers' boot, go first.
 * A Compile meanwhile waits for it.
 */
const TOOLCHAIN_PROBE_DELAY_MS = 250;

/** Everything a daemon is started with; the CLI fills it from flags. */
export interface DaemonConfig {
  readonly listen: ListenAddress;
  readonly cacheDir: string;
  readonly trustedKeysDir: string | undefined;
  readonly allowUnsigned: boolean;
  readonly rustc: string | undefined;
  readonly workers: number;
  /** --max-queued-executions: executions allowed to wait for a worker. */
  readonly maxQueuedExecutions: number;
  /** --max-buffered-bytes: bytes held for queued stdin and untaken streamed output. */
  readonly maxBufferedBytes: number;
  /** --memory-cache-max-bytes: total size of the compiled modules kept in memory. */
  readonly moduleMemoryMaxBytes: number;
  /** --max-created-entries: files, directories and links one run may create. */
  readonly maxCreatedEntries: number;
  readonly ceilings: PolicyCeilings;
  readonly defaults: PolicyDefaults;
  /** --allow-private-network: special-purpose address ranges scripts' outbound requests may reach after all. */
  readonly privateNetworks: readonly CidrRange[];
  /** Compiler settings: --insecure-compile, --bwrap, --compile-timeout-ms, --compile-memory-bytes. */
  readonly compile?: CompilerSettings;
  /** --cache-max-bytes: size cap of the on-disk module cache. */
  readonly cacheMaxBytes?: number;
  /** --admin-listen: absolute path of the admin socket; no admin socket when absent. */
  readonly adminSocketPath?: string;
  /** --admin-socket-group: group (name or gid) that may use the admin socket besides the daemon's user. */
  readonly adminSocketGroup?: string;
  /** --max-connections, --connection-idle-timeout-ms (defaults: DEFAULT_CONNECTION_LIMITS). */
  readonly connections?: ConnectionLimits;
  /** --max-args, --max-args-bytes, --max-env-vars, --max-env-bytes. */
  readonly requestLimits: RequestLimits;
  /** --remote-cache, --remote-cache-key, --remote-cache-mode, --remote-cache-timeout-ms; no shared cache when absent. */
  readonly remoteCache?: RemoteCacheSettings;
  /** --receipt-key: the Ed25519 private key (PEM PKCS#8) that signs a receipt of every execution; none when absent. */
  readonly receiptKeyFile?: string;
  /** --socket-mode, --socket-group: applied to a unix socket before the daemon says it listens. */
  readonly socketAccess?: SocketAccess;
  /** --metrics-listen HOST:PORT: serve Prometheus metrics there; none when absent. */
  readonly metricsListen?: { readonly host: string; readonly port: number };
}

/** Defaults for every setting but the listen address. */
export function defaultConfig(listen: ListenAddress = { kind: "unix", path: defaultSocketPath() }): DaemonConfig {
  return {
    listen,
    cacheDir: defaultCacheDir(),
    trustedKeysDir: undefined,
    allowUnsigned: false,
    rustc: undefined,
    workers: DEFAULT_WORKERS,
    maxQueuedExecutions: DEFAULT_MAX_QUEUED_EXECUTIONS,
    maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES,
    moduleMemoryMaxBytes: DEFAULT_MEMORY_CACHE_MAX_BYTES,
    maxCreatedEntries: DEFAULT_MAX_CREATED_ENTRIES,
    ceilings: {
      maxMemoryBytes: DEFAULT_CEILING_MEMORY_BYTES,
      maxTimeoutMs: DEFAULT_CEILING_TIMEOUT_MS,
      maxOutputBytes: DEFAULT_CEILING_OUTPUT_BYTES,
      maxWriteBytes: DEFAULT_CEILING_WRITE_BYTES,
      maxFuel: DEFAULT_CEILING_FUEL,
      maxHttpRequests: DEFAULT_CEILING_HTTP_REQUESTS,
      maxHttpResponseBytes: DEFAULT_CEILING_HTTP_RESPONSE_BYTES,
      maxHttpTimeoutMs: DEFAULT_CEILING_HTTP_TIMEOUT_MS,
      networkHosts: [],
      allowedRoots: [],
    },
    defaults: {
      memoryLimitBytes: DEFAULT_MEMORY_LIMIT_BYTES,
      timeoutMs: DEFAULT_TIMEOUT_MS,
      maxOutputBytes: DEFAULT_MAX_OUTPUT_BYTES,
      maxWriteBytes: DEFAULT_MAX_WRITE_BYTES,
      fuelLimit: 0,
      maxHttpRequests: DEFAULT_MAX_HTTP_REQUESTS,
      maxHttpResponseBytes: DEFAULT_MAX_HTTP_RESPONSE_BYTES,
      httpTimeoutMs: DEFAULT_HTTP_TIMEOUT_MS,
    },
    privateNetworks: [],
    requestLimits: DEFAULT_REQUEST_LIMITS,
  };
}

/** `$XDG_RUNTIME_DIR/sandboxd/sandboxd.sock`, or `/run/sandboxd/sandboxd.sock` without a runtime dir. */
export function defaultSocketPath(): string {
  const runtimeDir = process.env["XDG_RUNTIME_DIR"];
  return path.join(runtimeDir ? path.join(runtimeDir, "sandboxd") : "/run/sandboxd", "sandboxd.sock");
}

/** systemd's `$CACHE_DIRECTORY`, else `$XDG_CACHE_HOME/sandboxd`, else `~/.cache/sandboxd`. */
export function defaultCacheDir(): string {
  const systemd = process.env["CACHE_DIRECTORY"];
  if (systemd) return systemd.split(":")[0]!;
  return path.join(process.env["XDG_CACHE_HOME"] ?? path.join(homedir(), ".cache"), "sandboxd");
}

/**
 * Checks a config for contradictions an operator should hear about at start,
 * not at the first request: a default above its ceiling would make every
 * policy that leaves that limit at 0 get more than the operator allows.
 */
export function validateConfig(config: DaemonConfig): Error | undefined {
  const pairs = [
    ["timeout", config.defaults.timeoutMs, config.ceilings.maxTimeoutMs],
    ["memory", config.defaults.memoryLimitBytes, config.ceilings.maxMemoryBytes],
    ["output", config.defaults.maxOutputBytes, config.ceilings.maxOutputBytes],
    ["write", config.defaults.maxWriteBytes, config.ceilings.maxWriteBytes],
    ["fuel", config.defaults.fuelLimit, config.ceilings.maxFuel],
    ["HTTP request count", config.defaults.maxHttpRequests, config.ceilings.maxHttpRequests],
    ["HTTP response bytes", config.defaults.maxHttpResponseBytes, config.ceilings.maxHttpResponseBytes],
    ["HTTP timeout", config.defaults.httpTimeoutMs, config.ceilings.maxHttpTimeoutMs],
  ] as const;
  for (const [name, value, ceiling] of pairs) {
    if (value > ceiling) return new Error(`the default ${name} limit (${value}) exceeds its ceiling (${ceiling})`);
  }
  if (config.workers < 1) return new Error("at least one worker is needed");
  return undefined;
}

/** A running daemon: the core plus its server. */
export class Daemon {
  private constructor(
    readonly sandbox: Sandbox,
    private readonly server: SandboxServer,
    /** The address clients dial (grpc-js target syntax). */
    readonly address: string,
    private readonly logger: Logger,
    private readonly admin: AdminServer | undefined,
    /** The metrics endpoint, when --metrics-listen was given. */
    readonly metrics: MetricsEndpoint | undefined,
  ) {}

  /** Loads keys, starts workers, binds the listen address, then detects the toolchain. Serves before the workers are up: calls wait for one. */
  static async start(config: DaemonConfig, logger: Logger): Promise<Daemon> {
    const invalid = validateConfig(config);
    if (invalid) throw invalid;
    // The toolchain probe (rustc start-ups, a test build) runs once the daemon serves, so it does not
    // compete with start-up for the cores; a Compile meanwhile waits for it. The compiler logs once
    // whether Compile is unavailable, after it has also tried a build.
    let startProbe!: () => void;
    const toolchain = new Promise<ToolchainProbe>((resolve) => {
      startProbe = () =>
        resolve(
          probeToolchain(config.rustc).then((found) => {
            if (found.toolchain) logger.info("toolchain", { rustc: found.toolchain.rustc, target: found.toolchain.target });
            return found;
          }),
        );
    });
    let probing = false;
    const requestProbe = (): void => {
      if (probing) return;
      probing = true;
      startProbe();
    };
    const keys = await TrustedKeys.load(config.trustedKeysDir, (message) => logger.warn(message));
    if (config.trustedKeysDir !== undefined) logger.info("trusted keys loaded", { dir: config.trustedKeysDir, keyIds: keys.ids() });
    if (config.allowUnsigned) logger.warn("--allow-unsigned: requests without a policy run with default limits and no mounts");
    // Before serving: a daemon told to sign receipts must not run anything without them.
    const receiptSigner = config.receiptKeyFile === undefined ? undefined : await ReceiptSigner.load(config.receiptKeyFile);
    if (receiptSigner) logger.info("signing receipts", { receiptKeyId: receiptSigner.keyId });
    const sandbox = await Sandbox.create({
      toolchain,
      requestToolchain: requestProbe,
      cacheDir: config.cacheDir,
      workers: config.workers,
      maxQueuedExecutions: config.maxQueuedExecutions,
      maxBufferedBytes: config.maxBufferedBytes,
      moduleMemoryMaxBytes: config.moduleMemoryMaxBytes,
      maxCreatedEntries: config.maxCreatedEntries,
      keys,
      allowUnsigned: config.allowUnsigned,
      ceilings: config.ceilings,
      defaults: config.defaults,
      privateNetworks: config.privateNetworks,
      logger,
      ...(config.compile ? { compile: config.compile } : {}),
      ...(config.cacheMaxBytes ? { cacheMaxBytes: config.cacheMaxBytes } : {}),
      requestLimits: config.requestLimits,
      ...(config.remoteCache ? { remoteCache: config.remoteCache } : {}),
      ...(receiptSigner ? { receiptSigner } : {}),
    });
    let admin: AdminServer | undefined;
    let metrics: MetricsEndpoint | undefined;
    try {
      // Before the main socket: once a client sees "listening", the admin socket is there too.
      if (config.adminSocketPath) admin = await listenAdmin(sandbox, config.adminSocketPath, config.adminSocketGroup, logger);
      let meters: DaemonMetrics | undefined;
      if (config.metricsListen) {
        // Imported only when asked for: prom-client is a noticeable share of a start-up otherwise.
        const [{ DaemonMetrics }, { serveMetrics }] = await Promise.all([
          import("./metrics/daemon-metrics.js"),
          import("./metrics/metrics-server.js"),
        ]);
        meters = new DaemonMetrics(sandbox, config.workers);
        metrics = await serveMetrics(meters.registry, config.metricsListen.host, config.metricsListen.port);
        logger.info(`sandboxd metrics on http://${metrics.address}/metrics`, { metricsAddress: metrics.address });
      }
      const server = new SandboxServer(sandbox, logger, config.requestLimits, config.connections, meters);
      const access =
        config.listen.kind === "unix" ? await resolveSocketAccess(config.socketAccess ?? { mode: DEFAULT_SOCKET_MODE }) : undefined;
      const address = await server.listen(config.listen, access);
      logger.info(`sandboxd listening on ${address}`, { address, workers: config.workers, cacheDir: config.cacheDir });
      sandbox.startWorkers();
      setTimeout(requestProbe, TOOLCHAIN_PROBE_DELAY_MS).unref();
      // Health tells operators what the log says: this host cannot compile.
      void sandbox.compileUnavailable().then((reason) => {
        if (reason) server.markCompileUnavailable();
      });
      return new Daemon(sandbox, server, address, logger, admin, metrics);
    } catch (e: unknown) {
      await metrics?.close();
      await admin?.close(0);
      await sandbox.close();
      throw e;
    }
  }

  /** Graceful stop: in-flight calls get a grace period, then are cancelled; the socket file is removed. */
  async stop(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    this.logger.info("sandboxd stopping");
    await Promise.all([this.server.close(graceMs), this.admin?.close(graceMs)]);
    await this.metrics?.close();
    await this.sandbox.close();
    this.logger.info("sandboxd stopped");
  }
}

/** Opens the admin socket, only to the daemon's user unless a group is named. */
async function listenAdmin(sandbox: Sandbox, socketPath: string, group: string | undefined, logger: Logger): Promise<AdminServer> {
  const gid = group === undefined ? undefined : await resolveGroup(group);
  if (gid instanceof Error) throw new Error(`--admin-socket-group: ${gid.message}`);
  const admin = new AdminServer(sandbox.modules, logger);
  const address = await admin.listen({ path: socketPath, gid });
  logger.info(`sandboxd admin socket on ${address}`, { address, ...(gid === undefined ? { mode: "0600" } : { mode: "0660", gid }) });
  return admin;
}

/** The socket's mode and the gid its group name resolves to. */
async function resolveSocketAccess(access: SocketAccess): Promise<{ mode: number; gid?: number }> {
  if (access.group === undefined) return { mode: access.mode };
  const gid = await resolveGroup(access.group);
  if (gid instanceof Error) throw new Error(`--socket-group: ${gid.message}`);
  return { mode: access.mode, gid };
}
