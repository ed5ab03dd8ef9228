/**
 * The shared module cache: a tier behind the local store (memory, then disk) that many sandboxd
 * hosts share through one Redis. Nothing read from it is trusted until it is proven: the record is
 * authenticated with the cluster key for this very module id, sizes are checked before anything
 * large is downloaded, the module must hash to the record's SHA-256 and pass the same validation
 * as an upload. Anything else is logged, counted and treated as a miss.
 *
 * The shared cache never fails a call: an unreachable, slow or misbehaving Redis is a miss (every
 * operation is bounded by a timeout), uploads happen after the response, and the client reconnects
 * with back-off on its own.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis, RedisOptions } from "ioredis";
import type { Logger } from "../logger.js";
import {
  MAX_WASM_BYTES,
  REMOTE_CACHE_LEASE_POLL_MS,
  REMOTE_CACHE_LEASE_TTL_MS,
  REMOTE_CACHE_LEASE_WAIT_MS,
  REMOTE_CACHE_FAILURE_PAUSE_MS,
  REMOTE_CACHE_LOG_INTERVAL_MS,
  REMOTE_CACHE_MAX_RECORD_BYTES,
  REMOTE_CACHE_OP_TIMEOUT_MS,
  REMOTE_CACHE_RECONNECT_BASE_MS,
  REMOTE_CACHE_RECONNECT_MAX_MS,
} from "../limits.js";
import { validateCommandModule } from "../runtime/wasm/validate.js";
import type { ModuleStore } from "./module-store.js";
import { loadClusterKeys, openRecord, sealRecord, sha256Of, type ClusterKeys, type RemoteRecord } from "./remote-record.js";

/** Every key this daemon reads or writes starts with this, so one ACL pattern covers them. */
export const REMOTE_KEY_PREFIX = "sandboxd:v1:";

/** `ro`: consume entries only (for hosts that may not publish); `rw`: also publish and take compile leases. */
export type RemoteCacheMode = "ro" | "rw";

/** Where the shared cache is: a Redis URL (`redis://`, `rediss://` with TLS) or a local unix socket. */
export type RemoteCacheAddress = { readonly kind: "url"; readonly url: string } | { readonly kind: "unix"; readonly path: string };

/** The operator's settings of the shared cache (`--remote-cache*` flags). */
export interface RemoteCacheSettings {
  readonly address: RemoteCacheAddress;
  /** File of cluster keys (`--remote-cache-key`): the first signs, all verify. */
  readonly keyFile: string;
  readonly mode: RemoteCacheMode;
  /** Budget of one Redis operation; default REMOTE_CACHE_OP_TIMEOUT_MS. */
  readonly opTimeoutMs?: number;
}

/** What a host knows of the module it publishes or expects. */
export interface RemoteEntry {
  /** False for a cached compile failure (no module bytes). */
  readonly ok: boolean;
  readonly wasm: Uint8Array;
  /** The compiler's metadata, stored with the entry locally too. */
  readonly meta: Uint8Array;
  /** Fingerprint of the toolchain that built it. */
  readonly toolchain: string;
}

/** Counters of the shared cache since start (also in its log lines). */
export interface RemoteCacheStats {
  hits: number;
  misses: number;
  /** Entries present but refused: forged, replayed, altered, oversized or invalid. */
  rejected: number;
  /** Operations that failed or timed out (each counted as a miss). */
  errors: number;
  uploads: number;
  uploadErrors: number;
  /** Compiles that found another host's lease and were answered by its entry. */
  leaseWaitHits: number;
}

/** A host's claim to compile one module id for the cluster. */
export interface CompileLease {
  /** Gives the claim up once this host's upload of the entry (if any) is done. Never throws. */
  release(): void;
}

/** How the wait for the cluster's lease on a module id ended. */
export type LeaseOutcome =
  /** This host compiles; others wait for its entry. */
  | { readonly kind: "lease"; readonly lease: CompileLease }
  /** Another host published the entry meanwhile; it is now in the local store. */
  | { readonly kind: "filled" }
  /** No lease (read-only host, Redis unreachable, the holder died or took too long): compile without one. */
  | { readonly kind: "alone" };

/** Compare-and-delete: a holder whose lease lapsed must not delete the next holder's. */
const RELEASE_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;
/** Compare-and-extend, for the same reason. */
const RENEW_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`;

/**
 * Parses `--remote-cache`: `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS) or
 * `unix:///path/to/redis.sock`.
 */
export function parseRemoteCacheAddress(text: string): RemoteCacheAddress | Error {
  if (text.startsWith("unix://")) {
    const p = text.slice("unix://".length);
    return p.startsWith("/")
      ? { kind: "unix", path: p }
      : new Error(`--remote-cache unix:// takes an absolute path, got ${JSON.stringify(text)}`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return new Error(
      `--remote-cache takes redis://HOST:PORT, rediss://USER:PASSWORD@HOST:PORT or unix:///PATH, got ${JSON.stringify(text)}`,
    );
  }
  if ((url.protocol !== "redis:" && url.protocol !== "rediss:") || url.hostname === "") {
    return new Error(
      `--remote-cache takes redis://HOST:PORT, rediss://USER:PASSWORD@HOST:PORT or unix:///PATH, got ${url.protocol}//${url.host}`,
    );
  }
  return { kind: "url", url: text };
}

/** The address without its password, for logs. */
function displayAddress(address: RemoteCacheAddress): string {
  if (address.kind === "unix") return `unix://${address.path}`;
  const url = new URL(address.url);
  if (url.password) url.password = "***";
  return url.toString();
}

function recordKey(moduleId: string): string {
  return `${REMOTE_KEY_PREFIX}rec:${moduleId}`;
}
function wasmKey(sha256: string): string {
  return `${REMOTE_KEY_PREFIX}wasm:${sha256}`;
}
function leaseKey(moduleId: string): string {
  return `${REMOTE_KEY_PREFIX}lease:${moduleId}`;
}

/** An entry refused for a reason worth logging; distinct from a plain miss. */
class Rejected extends Error {}

/** The shared module cache on Redis. */
export class RemoteCache {
  private readonly counters: RemoteCacheStats = {
    hits: 0,
    misses: 0,
    rejected: 0,
    errors: 0,
    uploads: 0,
    uploadErrors: 0,
    leaseWaitHits: 0,
  };
  /** Uploads under way, by module id: a lease is released only after its upload, and close() waits for them. */
  private readonly uploads = new Map<string, Promise<void>>();
  private lastUnreachableLogMs = 0;
  /** Until then Redis is not asked at all: one that hangs costs one timeout per pause, not several per call. */
  private pausedUntilMs = 0;
  private closed = false;

  private constructor(
    private readonly redis: Redis,
    private readonly keys: ClusterKeys,
    private readonly mode: RemoteCacheMode,
    private readonly opTimeoutMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Reads the cluster keys (an unreadable or weak key file refuses the start) and connects in the
   * background: the daemon serves at once, and until Redis answers every lookup is a miss.
   */
  static async open(settings: RemoteCacheSettings, logger: Logger): Promise<RemoteCache> {
    const keys = await loadClusterKeys(settings.keyFile);
    if (keys instanceof Error) throw new Error(`--remote-cache-key: ${keys.message}`);
    const opTimeoutMs = settings.opTimeoutMs ?? REMOTE_CACHE_OP_TIMEOUT_MS;
    const options: RedisOptions = {
      // A command while disconnected fails at once (a miss) rather than waiting for a reconnect.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: opTimeoutMs,
      connectTimeout: opTimeoutMs,
      retryStrategy: (attempt: number) =>
        Math.min(REMOTE_CACHE_RECONNECT_BASE_MS * 2 ** Math.min(attempt - 1, 16), REMOTE_CACHE_RECONNECT_MAX_MS),
      // Only the commands the ACLs in docs/scale-out.md grant: no INFO ready check, no CLIENT SETINFO.
      enableReadyCheck: false,
      disableClientInfo: true,
      lazyConnect: false,
    };
    // Loaded here, not at the top: ioredis costs every daemon ~90 ms and ~30 MB at start, and most run without a shared cache.
    const { Redis } = await import("ioredis");
    const redis =
      settings.address.kind === "unix" ? new Redis({ ...options, path: settings.address.path }) : new Redis(settings.address.url, options);
    const cache = new RemoteCache(redis, keys, settings.mode, opTimeoutMs, logger);
    const where = displayAddress(settings.address);
    redis.on("ready", () => {
      cache.pausedUntilMs = 0;
      logger.info("remote cache connected", { remoteCache: where, mode: settings.mode, keyId: keys.signing.id });
    });
    redis.on("error", (e: unknown) => cache.unreachable(e, where));
    return cache;
  }

  /** Counters since start. */
  stats(): RemoteCacheStats {
    return { ...this.counters };
  }

  /**
   * Looks `moduleId` up in the shared cache and, when a verified entry is there, writes it to the
   * local store (disk, and memory with it). `expectToolchain`, when known, must match the record's.
   * True when the local store now has it; every failure is a miss.
   */
  async fill(store: ModuleStore, moduleId: string, expectToolchain?: string): Promise<boolean> {
    const entry = await this.fetch(moduleId, expectToolchain);
    if (!entry) return false;
    try {
      await store.put(moduleId, entry.wasm, entry.meta);
      return true;
    } catch (e: unknown) {
      this.logger.warn("could not store a remote cache entry locally", { moduleId, error: e instanceof Error ? e.message : String(e) });
      return false;
    }
  }

  /** The verified entry for `moduleId`, or undefined (absent, refused, or Redis unavailable). */
  private async fetch(moduleId: string, expectToolchain: string | undefined): Promise<RemoteEntry | undefined> {
    if (!this.usable()) return undefined;
    try {
      // GETRANGE bounds the download: a record (or module) bigger than allowed is refused unread.
      const stored = await this.redis.getrangeBuffer(recordKey(moduleId), 0, REMOTE_CACHE_MAX_RECORD_BYTES);
      if (stored.byteLength === 0) return this.miss();
      if (stored.byteLength > REMOTE_CACHE_MAX_RECORD_BYTES)
        throw new Rejected(`its record is over ${REMOTE_CACHE_MAX_RECORD_BYTES} bytes`);
      const record = openRecord(this.keys, moduleId, stored);
      if (record instanceof Error) throw new Rejected(record.message);
      if (expectToolchain !== undefined && record.toolchain !== expectToolchain)
        throw new Rejected("it was built by another toolchain than its id says");
      const wasm = await this.fetchModule(record);
      if (!wasm) return this.miss();
      this.counters.hits++;
      this.logger.info("remote cache hit", { moduleId, bytes: wasm.byteLength, ok: record.ok });
      return { ok: record.ok, wasm, meta: Buffer.from(record.meta, "base64"), toolchain: record.toolchain };
    } catch (e: unknown) {
      if (e instanceof Rejected) {
        this.counters.rejected++;
        this.logger.warn("remote cache entry rejected", { moduleId, why: e.message, rejected: this.counters.rejected });
        return undefined;
      }
      this.counters.errors++;
      this.unreachable(e, undefined);
      return undefined;
    }
  }

  /** The module a verified record names: size checked before download, then hashed and validated. */
  private async fetchModule(record: RemoteRecord): Promise<Uint8Array | undefined> {
    if (!record.ok) {
      if (record.wasmBytes !== 0) throw new Rejected("a failed compile's record names module bytes");
      return new Uint8Array(0);
    }
    if (record.wasmBytes === 0 || record.wasmBytes > MAX_WASM_BYTES)
      throw new Rejected(`its module size ${record.wasmBytes} is outside 1..${MAX_WASM_BYTES}`);
    const wasm = await this.redis.getrangeBuffer(wasmKey(record.wasmSha256), 0, record.wasmBytes);
    if (wasm.byteLength === 0) return undefined; // evicted under memory pressure: a plain miss
    if (wasm.byteLength !== record.wasmBytes) throw new Rejected(`its module is not the ${record.wasmBytes} bytes its record says`);
    if (sha256Of(wasm) !== record.wasmSha256) throw new Rejected("its module does not hash to its record's SHA-256");
    let module: WebAssembly.Module;
    try {
      module = await WebAssembly.compile(wasm as Uint8Array<ArrayBuffer>);
    } catch (e: unknown) {
      throw new Rejected(`its module is not valid WebAssembly: ${e instanceof Error ? e.message : String(e)}`);
    }
    const problems = validateCommandModule(module, wasm);
    if (problems.length > 0) throw new Rejected(`its module is not a WASI preview1 command: ${problems.join("; ")}`);
    return wasm;
  }

  private miss(): undefined {
    this.counters.misses++;
    return undefined;
  }

  /**
   * Uploads an entry in the background (module first, then the record naming it, so a record never
   * names a module that was not written). Read-only hosts publish nothing.
   */
  publish(moduleId: string, entry: RemoteEntry): void {
    if (this.mode !== "rw" || !this.usable() || entry.wasm.byteLength > MAX_WASM_BYTES) return;
    const record: RemoteRecord = {
      moduleId,
      ok: entry.ok,
      wasmSha256: sha256Of(entry.wasm),
      wasmBytes: entry.wasm.byteLength,
      toolchain: entry.toolchain,
      meta: Buffer.from(entry.meta).toString("base64"),
      createdUnixMs: Date.now(),
    };
    const sealed = sealRecord(this.keys, record);
    if (sealed.byteLength > REMOTE_CACHE_MAX_RECORD_BYTES) return;
    const upload = (async () => {
      try {
        if (entry.ok) await this.redis.set(wasmKey(record.wasmSha256), Buffer.from(entry.wasm));
        await this.redis.set(recordKey(moduleId), sealed);
        this.counters.uploads++;
        this.logger.debug("remote cache upload", { moduleId, bytes: entry.wasm.byteLength });
      } catch (e: unknown) {
        this.counters.uploadErrors++;
        this.unreachable(e, undefined);
      }
    })();
    this.uploads.set(moduleId, upload);
    void upload.finally(() => {
      if (this.uploads.get(moduleId) === upload) this.uploads.delete(moduleId);
    });
  }

  /**
   * Before compiling `moduleId` on a miss: claims the cluster's lease on it, or, when another host
   * holds it, waits (bounded) for that host's entry. A lease that lapses (its holder died) is
   * taken over. `signal` ends the wait early.
   */
  async lease(store: ModuleStore, moduleId: string, expectToolchain: string, signal: AbortSignal): Promise<LeaseOutcome> {
    const deadline = Date.now() + REMOTE_CACHE_LEASE_WAIT_MS;
    const token = randomBytes(16).toString("hex");
    let waited = false;
    try {
      while (this.usable() && !signal.aborted) {
        // Polls look for the record's key only: a refused entry is fetched (and logged) once, not every poll.
        if (waited && (await this.redis.exists(recordKey(moduleId))) === 1)
          return await this.filledAfterWait(store, moduleId, expectToolchain);
        if (this.mode === "rw") {
          if ((await this.redis.set(leaseKey(moduleId), token, "PX", REMOTE_CACHE_LEASE_TTL_MS, "NX")) === "OK") {
            const lease = this.holdLease(moduleId, token);
            // The holder we waited for may have published between our look and our claim.
            if (waited && (await this.filledAfterWait(store, moduleId, expectToolchain)).kind === "filled") {
              lease.release();
              return { kind: "filled" };
            }
            return { kind: "lease", lease };
          }
        } else if ((await this.redis.exists(leaseKey(moduleId))) === 0) {
          return waited ? await this.filledAfterWait(store, moduleId, expectToolchain) : { kind: "alone" };
        }
        if (Date.now() >= deadline) {
          this.logger.warn("waited too long for another host's compile; compiling here", {
            moduleId,
            waitedMs: REMOTE_CACHE_LEASE_WAIT_MS,
          });
          break;
        }
        if (!waited) this.logger.debug("another host is compiling this module; waiting for its entry", { moduleId });
        waited = true;
        await sleep(REMOTE_CACHE_LEASE_POLL_MS, undefined, { signal }).catch(() => undefined);
      }
    } catch (e: unknown) {
      this.counters.errors++;
      this.unreachable(e, undefined);
    }
    return { kind: "alone" };
  }

  /** After waiting on another host: its verified entry, or compile alone (it failed, died, or its entry was refused). */
  private async filledAfterWait(store: ModuleStore, moduleId: string, expectToolchain: string): Promise<LeaseOutcome> {
    if (!(await this.fill(store, moduleId, expectToolchain))) return { kind: "alone" };
    this.counters.leaseWaitHits++;
    return { kind: "filled" };
  }

  /** Keeps a lease alive while this host compiles; released after this host's upload. */
  private holdLease(moduleId: string, token: string): CompileLease {
    const key = leaseKey(moduleId);
    const renew = setInterval(() => {
      this.redis.eval(RENEW_SCRIPT, 1, key, token, String(REMOTE_CACHE_LEASE_TTL_MS)).catch((e: unknown) => this.unreachable(e, undefined));
    }, REMOTE_CACHE_LEASE_TTL_MS / 3);
    renew.unref();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        clearInterval(renew);
        void (async () => {
          await this.uploads.get(moduleId);
          await this.redis.eval(RELEASE_SCRIPT, 1, key, token);
        })().catch((e: unknown) => this.unreachable(e, undefined));
      },
    };
  }

  /** Whether to ask Redis now: not after close, nor during the pause that follows a failed operation. */
  private usable(): boolean {
    return !this.closed && Date.now() >= this.pausedUntilMs;
  }

  /**
   * A failed or timed-out operation pauses the shared cache for a moment (reconnecting ends the pause
   * early) and is logged at most once per interval (a down Redis must not flood the log).
   */
  private unreachable(e: unknown, where: string | undefined): void {
    const now = Date.now();
    this.pausedUntilMs = now + REMOTE_CACHE_FAILURE_PAUSE_MS;
    if (now - this.lastUnreachableLogMs < REMOTE_CACHE_LOG_INTERVAL_MS) return;
    this.lastUnreachableLogMs = now;
    this.logger.warn("remote cache unavailable; compiling locally meanwhile", {
      ...(where ? { remoteCache: where } : {}),
      error: e instanceof Error ? e.message : String(e),
      errors: this.counters.errors,
    });
  }

  /** Waits (bounded) for uploads under way, then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pending = Promise.allSettled([...this.uploads.values()]);
    const stop = new AbortController();
    const timer = sleep(this.opTimeoutMs, undefined, { signal: stop.signal }).catch(() => undefined);
    await Promise.race([pending, timer]);
    stop.abort();
    this.redis.disconnect();
  }
}
