/**
 * The daemon's flags: parsing them into a DaemonConfig is kept apart from the
 * entry point so tests (and the systemd unit's check) can use it without
 * starting a daemon.
 */
import { parseArgs } from "node:util";
import path from "node:path";
import {
  defaultConfig,
  defaultSocketPath,
  DEFAULT_GROUP_SOCKET_MODE,
  DEFAULT_SOCKET_MODE,
  type DaemonConfig,
  type SocketAccess,
} from "../daemon.js";
import { parseMetricsListen } from "../metrics/metrics-server.js";
import { DEFAULT_CONNECTION_LIMITS, parseListenAddress } from "../grpc/server.js";
import { parseHostPatterns } from "../policy/host-patterns.js";
import { parseCidr, type CidrRange } from "../runtime/net/address-rules.js";
import {
  COMPILE_MAX_QUEUED,
  COMPILE_MEMORY_LIMIT_BYTES,
  COMPILE_TIMEOUT_MS,
  DEFAULT_CACHE_MAX_BYTES,
  MAX_ARGS,
  MAX_ARGS_BYTES,
  MAX_ENV_BYTES,
  MAX_ENV_VARS,
  REMOTE_CACHE_OP_TIMEOUT_MS,
} from "../limits.js";
import { parseRemoteCacheAddress, type RemoteCacheSettings } from "../cache/remote-cache.js";

/** The built-in settings --help shows as defaults. */
const D = defaultConfig();

/** The --help text: every flag with its default. */
export const USAGE = `usage: sandboxd [options]

  --listen ADDR            unix:///path/to.sock or HOST:PORT (default unix://${defaultSocketPath()})
  --cache-dir DIR          compiled module cache (default $CACHE_DIRECTORY, $XDG_CACHE_HOME/sandboxd or ~/.cache/sandboxd)
  --trusted-keys DIR       directory of <key_id>.pub Ed25519 public keys (PEM SPKI); SIGHUP reloads it (default: none, so only --allow-unsigned runs)
  --allow-unsigned         run requests without a policy (no mounts, default limits): development only
  --allow-mount-root DIR   host directory under which policies may mount (repeatable; none by default)
  --max-memory-bytes N     ceiling on a policy's memory_limit_bytes (default ${D.ceilings.maxMemoryBytes}; a policy's default ${D.defaults.memoryLimitBytes})
  --max-timeout-ms N       ceiling on a policy's timeout_ms (default ${D.ceilings.maxTimeoutMs})
  --max-output-bytes N     ceiling on a policy's max_output_bytes (default ${D.ceilings.maxOutputBytes}; a policy's default ${D.defaults.maxOutputBytes})
  --max-write-bytes N      ceiling on a policy's max_write_bytes, bytes a run may add to its writable mounts (default ${D.ceilings.maxWriteBytes}; a policy's default ${D.defaults.maxWriteBytes})
  --max-created-entries N  files, directories and links one run may create in its writable mounts (default ${D.maxCreatedEntries})
  --allow-network-host PATTERN  scheme://host[:port] (or scheme://*.domain) policies may let scripts reach over HTTP(S)
                           (repeatable; none by default, so no policy can grant network)
  --allow-private-network CIDR  loopback/private/link-local range scripts' requests may reach after all (repeatable)
  --max-http-requests N    ceiling on a policy's max_http_requests, outbound requests per run (default ${D.ceilings.maxHttpRequests})
  --max-http-response-bytes N  ceiling on a policy's max_http_response_bytes, response bytes per run (default ${D.ceilings.maxHttpResponseBytes})
  --max-http-timeout-ms N  ceiling on a policy's http_timeout_ms, one request with its redirects (default ${D.ceilings.maxHttpTimeoutMs})
  --default-timeout-ms N   wall-clock limit of runs whose policy does not set one, and of unsigned runs (default ${D.defaults.timeoutMs})
  --max-fuel N             ceiling on a policy's fuel_limit, fuel counted as wasmtime counts it (default: none)
  --default-fuel-limit N   fuel limit of runs whose policy does not set one (default: none, runs are not metered)
  --receipt-key FILE       Ed25519 private key (PEM PKCS#8) signing a receipt of every execution; key id = file name without .key
  --max-args N             arguments one Execute may carry (default ${MAX_ARGS})
  --max-args-bytes N       total bytes of those arguments (default ${MAX_ARGS_BYTES})
  --max-env-vars N         environment variables one Execute may carry (default ${MAX_ENV_VARS})
  --max-env-bytes N        total bytes of their keys and values (default ${MAX_ENV_BYTES})
  --cache-max-bytes N      size cap of the on-disk module cache; least recently used entries are evicted (default ${DEFAULT_CACHE_MAX_BYTES})
  --memory-cache-max-bytes N  size of the compiled modules kept in memory; least recently used are dropped (default ${D.moduleMemoryMaxBytes})
  --insecure-compile       compile even without bubblewrap (scripts can then read host files at compile time)
  --bwrap PATH             bubblewrap binary (default: bwrap on PATH, /usr/bin/bwrap)
  --compile-timeout-ms N   wall-clock budget of one rustc run (default ${COMPILE_TIMEOUT_MS})
  --compile-memory-bytes N address-space cap of one rustc run (default ${COMPILE_MEMORY_LIMIT_BYTES})
  --compile-concurrency N  rustc runs at once (default: the number of cores)
  --compile-max-queued N   compiles waiting for a slot beyond which Compile is RESOURCE_EXHAUSTED (default ${COMPILE_MAX_QUEUED})
  --rustc PATH             rustc to use (default: the first of PATH's rustc and /usr/bin/rustc with a WASI target)
  --workers N              warm worker threads running guests (default ${D.workers}: the cores, at least 4)
  --max-queued-executions N  executions waiting for a worker beyond which Execute is RESOURCE_EXHAUSTED (default ${D.maxQueuedExecutions})
  --max-buffered-bytes N   bytes held for queued stdin and unread streamed output; beyond it Execute is RESOURCE_EXHAUSTED (default ${D.maxBufferedBytes})
  --max-connections N      client connections open at once; more are closed on arrival (default ${DEFAULT_CONNECTION_LIMITS.maxConnections})
  --connection-idle-timeout-ms N
                           close a connection with no call in flight for N ms (default ${DEFAULT_CONNECTION_LIMITS.idleTimeoutMs})
  --admin-listen unix:///PATH  serve AdminService (module cache management) on this socket only (mode 0600)
  --admin-socket-group GROUP   let this group (name or gid) use the admin socket too (mode 0660)
  --remote-cache URL       share compiled modules with other hosts through Redis: redis://HOST:PORT,
                           rediss://USER:PASSWORD@HOST:PORT (TLS) or unix:///PATH (needs --remote-cache-key)
  --remote-cache-key FILE  cluster key(s) that authenticate shared entries, one per line; the first signs
  --remote-cache-mode MODE rw (default: read and publish) or ro (read only)
  --remote-cache-timeout-ms N  budget of one Redis operation; past it the lookup is a miss (default ${REMOTE_CACHE_OP_TIMEOUT_MS})
  --socket-mode MODE       octal mode of the --listen unix socket (default 0600, or 0660 with --socket-group)
  --socket-group GROUP     give the --listen socket to this group (name or gid; the daemon must be a member)
  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics (default: off)
  --log-level LEVEL        error, warn, info (default) or debug
  --version                print the version
  -h, --help               this text
`;

/** Parses argv into a config; returns an Error (with the usage) on bad flags. */
export function parseFlags(argv: readonly string[]): { config: DaemonConfig; logLevel: string } | { help: true } | Error {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: "string" },
        "cache-dir": { type: "string" },
        "trusted-keys": { type: "string" },
        "allow-unsigned": { type: "boolean", default: false },
        "allow-mount-root": { type: "string", multiple: true, default: [] },
        "max-memory-bytes": { type: "string" },
        "max-timeout-ms": { type: "string" },
        "max-output-bytes": { type: "string" },
        "max-write-bytes": { type: "string" },
        "max-created-entries": { type: "string" },
        "allow-network-host": { type: "string", multiple: true, default: [] },
        "allow-private-network": { type: "string", multiple: true, default: [] },
        "max-http-requests": { type: "string" },
        "max-http-response-bytes": { type: "string" },
        "max-http-timeout-ms": { type: "string" },
        "default-timeout-ms": { type: "string" },
        "max-fuel": { type: "string" },
        "default-fuel-limit": { type: "string" },
        "receipt-key": { type: "string" },
        "max-args": { type: "string" },
        "max-args-bytes": { type: "string" },
        "max-env-vars": { type: "string" },
        "max-env-bytes": { type: "string" },
        rustc: { type: "string" },
        "cache-max-bytes": { type: "string" },
        "memory-cache-max-bytes": { type: "string" },
        "insecure-compile": { type: "boolean", default: false },
        bwrap: { type: "string" },
        "compile-timeout-ms": { type: "string" },
        "compile-memory-bytes": { type: "string" },
        "compile-concurrency": { type: "string" },
        "compile-max-queued": { type: "string" },
        workers: { type: "string" },
        "max-queued-executions": { type: "string" },
        "max-buffered-bytes": { type: "string" },
        "max-connections": { type: "string" },
        "connection-idle-timeout-ms": { type: "string" },
        "admin-listen": { type: "string" },
        "admin-socket-group": { type: "string" },
        "remote-cache": { type: "string" },
        "remote-cache-key": { type: "string" },
        "remote-cache-mode": { type: "string" },
        "remote-cache-timeout-ms": { type: "string" },
        "socket-mode": { type: "string" },
        "socket-group": { type: "string" },
        "metrics-listen": { type: "string" },
        "log-level": { type: "string", default: "info" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e: unknown) {
    return new Error(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values;
  if (v.help) return { help: true };
  const base = defaultConfig();
  const listen = v.listen === undefined ? base.listen : parseListenAddress(v.listen);
  if (listen instanceof Error) return listen;
  const numbers: Record<string, number | undefined> = {};
  for (const flag of [
    "max-memory-bytes",
    "max-timeout-ms",
    "max-output-bytes",
    "max-write-bytes",
    "max-created-entries",
    "max-http-requests",
    "max-http-response-bytes",
    "max-http-timeout-ms",
    "default-timeout-ms",
    "max-fuel",
    "default-fuel-limit",
    "workers",
    "cache-max-bytes",
    "compile-timeout-ms",
    "compile-memory-bytes",
    "compile-concurrency",
    "compile-max-queued",
    "max-queued-executions",
    "max-buffered-bytes",
    "memory-cache-max-bytes",
    "max-connections",
    "connection-idle-timeout-ms",
    "max-args",
    "max-args-bytes",
    "max-env-vars",
    "max-env-bytes",
    "remote-cache-timeout-ms",
  ] as const) {
    const text = v[flag];
    if (text === undefined) continue;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n <= 0) return new Error(`--${flag} takes a positive integer, got ${JSON.stringify(text)}`);
    numbers[flag] = n;
  }
  if (!["error", "warn", "info", "debug"].includes(v["log-level"])) return new Error(`--log-level takes error, warn, info or debug`);
  const networkHosts = parseHostPatterns(v["allow-network-host"]);
  if (networkHosts instanceof Error) return new Error(`--allow-network-host: ${networkHosts.message}`);
  const privateNetworks: CidrRange[] = [];
  for (const text of v["allow-private-network"]) {
    const range = parseCidr(text);
    if (range instanceof Error) return new Error(`--allow-private-network: ${range.message}`);
    privateNetworks.push(range);
  }
  const admin = parseAdminFlags(v["admin-listen"], v["admin-socket-group"]);
  if (admin instanceof Error) return admin;
  if (listen.kind === "unix" && admin.adminSocketPath === listen.path)
    return new Error("--admin-listen must be another socket than --listen");
  const remoteCache = parseRemoteCacheFlags(
    v["remote-cache"],
    v["remote-cache-key"],
    v["remote-cache-mode"],
    numbers["remote-cache-timeout-ms"],
  );
  if (remoteCache instanceof Error) return remoteCache;
  const access = parseSocketAccess(v["socket-mode"], v["socket-group"], listen.kind === "unix");
  if (access instanceof Error) return access;
  const metricsListen = v["metrics-listen"] === undefined ? undefined : parseMetricsListen(v["metrics-listen"]);
  if (metricsListen instanceof Error) return metricsListen;
  return {
    logLevel: v["log-level"],
    config: {
      ...base,
      listen,
      ...(access ? { socketAccess: access } : {}),
      ...(metricsListen ? { metricsListen } : {}),
      cacheDir: v["cache-dir"] ? path.resolve(v["cache-dir"]) : base.cacheDir,
      trustedKeysDir: v["trusted-keys"] ? path.resolve(v["trusted-keys"]) : undefined,
      allowUnsigned: v["allow-unsigned"],
      rustc: v.rustc,
      workers: numbers["workers"] ?? base.workers,
      maxQueuedExecutions: numbers["max-queued-executions"] ?? base.maxQueuedExecutions,
      maxBufferedBytes: numbers["max-buffered-bytes"] ?? base.maxBufferedBytes,
      moduleMemoryMaxBytes: numbers["memory-cache-max-bytes"] ?? base.moduleMemoryMaxBytes,
      maxCreatedEntries: numbers["max-created-entries"] ?? base.maxCreatedEntries,
      ceilings: {
        maxMemoryBytes: numbers["max-memory-bytes"] ?? base.ceilings.maxMemoryBytes,
        maxTimeoutMs: numbers["max-timeout-ms"] ?? base.ceilings.maxTimeoutMs,
        maxOutputBytes: numbers["max-output-bytes"] ?? base.ceilings.maxOutputBytes,
        maxWriteBytes: numbers["max-write-bytes"] ?? base.ceilings.maxWriteBytes,
        maxFuel: numbers["max-fuel"] ?? base.ceilings.maxFuel,
        maxHttpRequests: numbers["max-http-requests"] ?? base.ceilings.maxHttpRequests,
        maxHttpResponseBytes: numbers["max-http-response-bytes"] ?? base.ceilings.maxHttpResponseBytes,
        maxHttpTimeoutMs: numbers["max-http-timeout-ms"] ?? base.ceilings.maxHttpTimeoutMs,
        networkHosts,
        allowedRoots: v["allow-mount-root"].map((root) => path.resolve(root)),
      },
      // A lowered ceiling lowers the built-in default with it; only an explicit
      // default above its ceiling is a contradiction (refused at start).
      defaults: {
        memoryLimitBytes: Math.min(base.defaults.memoryLimitBytes, numbers["max-memory-bytes"] ?? Infinity),
        timeoutMs: numbers["default-timeout-ms"] ?? Math.min(base.defaults.timeoutMs, numbers["max-timeout-ms"] ?? Infinity),
        maxOutputBytes: Math.min(base.defaults.maxOutputBytes, numbers["max-output-bytes"] ?? Infinity),
        maxWriteBytes: Math.min(base.defaults.maxWriteBytes, numbers["max-write-bytes"] ?? Infinity),
        maxHttpRequests: Math.min(base.defaults.maxHttpRequests, numbers["max-http-requests"] ?? Infinity),
        maxHttpResponseBytes: Math.min(base.defaults.maxHttpResponseBytes, numbers["max-http-response-bytes"] ?? Infinity),
        httpTimeoutMs: Math.min(base.defaults.httpTimeoutMs, numbers["max-http-timeout-ms"] ?? Infinity),
        fuelLimit: numbers["default-fuel-limit"] ?? base.defaults.fuelLimit,
      },
      privateNetworks,
      ...(v["receipt-key"] ? { receiptKeyFile: path.resolve(v["receipt-key"]) } : {}),
      ...(numbers["cache-max-bytes"] ? { cacheMaxBytes: numbers["cache-max-bytes"] } : {}),
      ...admin,
      ...(remoteCache ? { remoteCache } : {}),
      connections: {
        maxConnections: numbers["max-connections"] ?? DEFAULT_CONNECTION_LIMITS.maxConnections,
        idleTimeoutMs: numbers["connection-idle-timeout-ms"] ?? DEFAULT_CONNECTION_LIMITS.idleTimeoutMs,
      },
      requestLimits: {
        maxArgs: numbers["max-args"] ?? base.requestLimits.maxArgs,
        maxArgsBytes: numbers["max-args-bytes"] ?? base.requestLimits.maxArgsBytes,
        maxEnvVars: numbers["max-env-vars"] ?? base.requestLimits.maxEnvVars,
        maxEnvBytes: numbers["max-env-bytes"] ?? base.requestLimits.maxEnvBytes,
      },
      compile: {
        insecureCompile: v["insecure-compile"],
        ...(v.bwrap ? { bwrapPath: path.resolve(v.bwrap) } : {}),
        ...(numbers["compile-timeout-ms"] ? { timeoutMs: numbers["compile-timeout-ms"] } : {}),
        ...(numbers["compile-memory-bytes"] ? { memoryLimitBytes: numbers["compile-memory-bytes"] } : {}),
        ...(numbers["compile-concurrency"] ? { concurrency: numbers["compile-concurrency"] } : {}),
        ...(numbers["compile-max-queued"] ? { maxQueued: numbers["compile-max-queued"] } : {}),
      },
    },
  };
}

/** --admin-listen must be a unix socket (file permissions are its access control); a group needs a socket. */
function parseAdminFlags(
  listen: string | undefined,
  group: string | undefined,
): { adminSocketPath?: string; adminSocketGroup?: string } | Error {
  if (listen === undefined) return group === undefined ? {} : new Error("--admin-socket-group needs --admin-listen");
  const address = parseListenAddress(listen);
  if (address instanceof Error || address.kind !== "unix") {
    return new Error(
      `--admin-listen takes unix:///path/to/admin.sock (never TCP: the socket's file mode is its access control), got ${JSON.stringify(listen)}`,
    );
  }
  if (group !== undefined && !/^(\d+|[A-Za-z_][A-Za-z0-9_.-]*\$?)$/.test(group))
    return new Error(`--admin-socket-group takes a group name or gid, got ${JSON.stringify(group)}`);
  return { adminSocketPath: address.path, ...(group === undefined ? {} : { adminSocketGroup: group }) };
}

/** --socket-mode and --socket-group, for a unix --listen only; a group alone means 0660. */
function parseSocketAccess(mode: string | undefined, group: string | undefined, unix: boolean): SocketAccess | undefined | Error {
  if (mode === undefined && group === undefined) return undefined;
  if (!unix) return new Error("--socket-mode and --socket-group apply to a unix --listen socket only");
  if (group !== undefined && !/^(\d+|[A-Za-z_][A-Za-z0-9_.-]*\$?)$/.test(group))
    return new Error(`--socket-group takes a group name or gid, got ${JSON.stringify(group)}`);
  let parsedMode = group === undefined ? DEFAULT_SOCKET_MODE : DEFAULT_GROUP_SOCKET_MODE;
  if (mode !== undefined) {
    if (!/^0?[0-7]{3}$/.test(mode)) return new Error(`--socket-mode takes an octal mode such as 0660, got ${JSON.stringify(mode)}`);
    parsedMode = parseInt(mode, 8);
  }
  return { mode: parsedMode, ...(group === undefined ? {} : { group }) };
}

/** The shared cache needs its key (an unauthenticated shared cache is what it exists to prevent); its other flags need it. */
function parseRemoteCacheFlags(
  url: string | undefined,
  keyFile: string | undefined,
  mode: string | undefined,
  timeoutMs: number | undefined,
): RemoteCacheSettings | undefined | Error {
  if (url === undefined) {
    if (keyFile !== undefined || mode !== undefined || timeoutMs !== undefined)
      return new Error("--remote-cache-key, --remote-cache-mode and --remote-cache-timeout-ms need --remote-cache");
    return undefined;
  }
  const address = parseRemoteCacheAddress(url);
  if (address instanceof Error) return address;
  if (keyFile === undefined)
    return new Error(
      "--remote-cache needs --remote-cache-key FILE: entries shared without a cluster key could be forged by anyone who can write to Redis",
    );
  if (mode !== undefined && mode !== "ro" && mode !== "rw")
    return new Error(`--remote-cache-mode takes ro or rw, got ${JSON.stringify(mode)}`);
  return { address, keyFile: path.resolve(keyFile), mode: mode ?? "rw", ...(timeoutMs ? { opTimeoutMs: timeoutMs } : {}) };
}
