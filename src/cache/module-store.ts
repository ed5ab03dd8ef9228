import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../atomic-file.js";
import { DEFAULT_CACHE_MAX_BYTES, MODULE_USAGE_FLUSH_INTERVAL_MS } from "../limits.js";

/** A module id: lowercase hex SHA-256. */
export const MODULE_ID_PATTERN = /^[0-9a-f]{64}$/;

/**
 * An entry is `MAGIC`, then `<sha256 hex of meta+module> <meta length>\n`, then meta, then the module.
 * It records its own hash because a compiled module's id hashes its inputs, not its bytes:
 * without it a truncated file would look valid.
 */
const ENTRY_MAGIC = "sandboxd-module-v1\n";
/** Longest header line we accept (64 hex, a space, a length, "\n"). */
const MAX_HEADER_LINE_BYTES = 64 + 1 + 16 + 1;
/** Suffix of entries; anything else in the directory is ours to clean or not ours to touch. */
const ENTRY_SUFFIX = ".mod";
/** Suffix of writes in progress; any found at open were cut short by a crash and are deleted. */
const TEMP_SUFFIX = ".tmp";
/**
 * Hit counts, last-used times and pins, beside the entries. Written whole and atomically: pins at
 * once (an operator's pin must survive a crash), counts lazily (the hit path never waits on a disk).
 */
const USAGE_FILE = "usage.json";
/** Version of the usage file's layout; another version is ignored (counts restart, with a warning). */
const USAGE_VERSION = 1;

/** Receives the store's warnings (corrupt entries, evictions failing). */
export type StoreWarn = (message: string, fields?: Record<string, unknown>) => void;

/** Options of {@link ModuleStore.open}. */
export interface ModuleStoreOptions {
  /** Size cap of the store; least recently used entries are evicted beyond it. */
  maxBytes?: number;
  warn?: StoreWarn;
}

/** Recency is written to disk (mtime) at most this often per entry: a hot hit path stays syscall-free. */
const TOUCH_INTERVAL_MS = 60_000;

interface IndexEntry {
  size: number;
  /** When the entry's mtime was last set by us (0: never by this process). */
  touchedAtMs: number;
  /** Set once this process has checked the entry against its recorded hash; later hits need not re-read it. */
  meta: Uint8Array | undefined;
  /** Last Compile cache hit or execution (Unix ms); at open, the later of the file's mtime and the usage file. */
  lastUsedMs: number;
  hits: number;
  /** Never evicted to keep the store under its cap. */
  pinned: boolean;
}

/** What the store knows about an entry without reading it. */
export interface EntryUsage {
  readonly moduleId: string;
  readonly sizeBytes: number;
  readonly lastUsedMs: number;
  readonly hits: number;
  readonly pinned: boolean;
}

/** A verified entry's metadata (e.g. a compile's warnings). */
export interface StoredEntry {
  readonly meta: Uint8Array;
}

/**
 * Content-addressed on-disk store of module binaries under `<cacheDir>/modules`.
 *
 * - Writes are atomic: temp file in the same directory, fsync, rename, fsync of the directory;
 *   a crash (even kill -9) leaves either no entry or a whole one, plus a temp file that the
 *   next open deletes.
 * - Every read verifies the payload against the hash in the entry's header; a corrupt or truncated
 *   entry is deleted and reported as absent, so the caller rebuilds it and never runs it.
 * - Total size is capped; eviction is least recently used (file mtimes carry recency across restarts)
 *   and skips pinned entries.
 * - Hit counts, last-used times and pins live in memory and in `usage.json` (written atomically:
 *   at once for a pin, at most every MODULE_USAGE_FLUSH_INTERVAL_MS for counts, and at close).
 */
export class ModuleStore {
  /** id → entry, in recency order (Map iteration order is insertion order). */
  private readonly index = new Map<string, IndexEntry>();
  private totalBytes = 0;
  /** Puts under way; a removal waits for them so the index and the directory agree afterwards. */
  private readonly puts = new Set<Promise<unknown>>();
  /** A removal (EvictModule, ClearCache) under way; new puts wait for it. */
  private removing: Promise<unknown> | undefined;
  /** Usage changed since the usage file was last written. */
  private usageDirty = false;
  private usageTimer: NodeJS.Timeout | undefined;
  /** Usage writes happen one at a time, each of the state at its start. */
  private usageWrite: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly warn: StoreWarn,
  ) {}

  /** Opens (creating if needed) the store in `cacheDir`, deletes leftover temp files and indexes the entries. */
  static async open(cacheDir: string, options: ModuleStoreOptions = {}): Promise<ModuleStore> {
    const dir = path.join(cacheDir, "modules");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new ModuleStore(dir, options.maxBytes ?? DEFAULT_CACHE_MAX_BYTES, options.warn ?? (() => {}));
    await store.scan();
    return store;
  }

  private async scan(): Promise<void> {
    const found: { id: string; size: number; mtimeMs: number }[] = [];
    for (const name of await readdir(this.dir)) {
      const full = path.join(this.dir, name);
      if (name.endsWith(TEMP_SUFFIX)) {
        await rm(full, { force: true });
        continue;
      }
      const id = name.slice(0, -ENTRY_SUFFIX.length);
      if (!name.endsWith(ENTRY_SUFFIX) || !MODULE_ID_PATTERN.test(id)) continue;
      try {
        const st = await stat(full);
        if (st.isFile()) found.push({ id, size: st.size, mtimeMs: st.mtimeMs });
      } catch {
        // vanished meanwhile (another process cleaning up): nothing to index
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of found) this.remember(f.id, f.size, undefined).lastUsedMs = f.mtimeMs;
    await this.loadUsage();
    await this.enforceCap(undefined);
  }

  private async loadUsage(): Promise<void> {
    let text: string;
    try {
      text = await readFile(path.join(this.dir, USAGE_FILE), "utf8");
    } catch (e: unknown) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT")
        this.warn("could not read the module usage file; hit counts and pins restart", { error: String(e) });
      return;
    }
    const usage = parseUsage(text);
    if (usage instanceof Error) {
      this.warn("the module usage file is invalid; hit counts and pins restart", { error: usage.message });
      return;
    }
    for (const [id, recorded] of usage) {
      const entry = this.index.get(id);
      if (!entry) continue; // evicted by another process while we were down
      entry.hits = recorded.hits;
      entry.pinned = recorded.pinned;
      entry.lastUsedMs = Math.max(entry.lastUsedMs, recorded.lastUsedMs);
    }
  }

  /** Number of entries and their total size on disk. */
  stats(): { entries: number; bytes: number; maxBytes: number } {
    return { entries: this.index.size, bytes: this.totalBytes, maxBytes: this.maxBytes };
  }

  /** Size and usage of one entry, if the store has it. */
  usage(moduleId: string): EntryUsage | undefined {
    const entry = this.index.get(moduleId);
    return entry ? usageOf(moduleId, entry) : undefined;
  }

  /** Size and usage of every entry. */
  usages(): EntryUsage[] {
    return [...this.index].map(([id, entry]) => usageOf(id, entry));
  }

  /**
   * Counts a use of an entry (a Compile answered from the cache, an execution) and makes it the
   * most recently used. Memory only: the count reaches disk with the next lazy usage write.
   */
  recordUse(moduleId: string): void {
    const entry = this.index.get(moduleId);
    if (!entry) return;
    entry.hits++;
    entry.lastUsedMs = Date.now();
    this.touch(moduleId, entry);
    this.usageChanged();
  }

  /** Pins or unpins an entry, durably before it returns; false when there is no such entry. */
  async setPinned(moduleId: string, pinned: boolean): Promise<boolean> {
    const entry = this.index.get(moduleId);
    if (!entry) return false;
    if (entry.pinned === pinned) return true;
    entry.pinned = pinned;
    this.usageDirty = true;
    try {
      await this.flushUsage();
    } catch (e: unknown) {
      entry.pinned = !pinned;
      throw e;
    }
    return true;
  }

  /**
   * The metadata an entry was stored with, for describing it: verified if this process has loaded the
   * entry, otherwise read from its header without checking the module against its hash (which would
   * mean reading every module to list them). Undefined when absent or unreadable.
   */
  async describe(moduleId: string): Promise<Uint8Array | undefined> {
    const entry = this.index.get(moduleId);
    if (!entry) return undefined;
    if (entry.meta) return entry.meta;
    try {
      const handle = await open(this.file(moduleId), "r");
      try {
        const head = Buffer.alloc(ENTRY_MAGIC.length + MAX_HEADER_LINE_BYTES);
        const { bytesRead } = await handle.read(head, 0, head.byteLength, 0);
        const header = parseHeader(head.subarray(0, bytesRead));
        if (!header || header.metaBytes > entry.size) return undefined;
        const meta = Buffer.alloc(header.metaBytes);
        const read = await handle.read(meta, 0, meta.byteLength, header.bodyStart);
        return read.bytesRead === meta.byteLength ? meta : undefined;
      } finally {
        await handle.close();
      }
    } catch {
      return undefined; // evicted meanwhile
    }
  }

  /**
   * The entry's metadata if a valid entry exists. Verifies the entry the first time this process
   * sees it; after that it is a memory lookup, which is what makes a repeated Compile cheap.
   */
  async lookup(moduleId: string): Promise<StoredEntry | undefined> {
    const entry = this.index.get(moduleId);
    if (!entry) return undefined;
    if (entry.meta) {
      this.touch(moduleId, entry);
      return { meta: entry.meta };
    }
    const read = await this.read(moduleId);
    return read ? { meta: read.meta } : undefined;
  }

  /** The module's verified bytes, or undefined when absent or corrupt (a corrupt entry is deleted). */
  async get(moduleId: string): Promise<Uint8Array | undefined> {
    return (await this.read(moduleId))?.module;
  }

  private async read(moduleId: string): Promise<{ meta: Uint8Array; module: Uint8Array } | undefined> {
    if (!MODULE_ID_PATTERN.test(moduleId)) return undefined;
    let raw: Buffer;
    try {
      raw = await readFile(this.file(moduleId));
    } catch (e: unknown) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") {
        this.forget(moduleId);
        return undefined;
      }
      throw e;
    }
    const decoded = decodeEntry(raw);
    if (!decoded) {
      this.warn("module cache entry is corrupt; evicting it", { moduleId, bytes: raw.byteLength });
      await this.evict(moduleId);
      return undefined;
    }
    const entry = this.remember(moduleId, raw.byteLength, decoded.meta);
    this.touch(moduleId, entry);
    return decoded;
  }

  private async write(moduleId: string, bytes: Uint8Array, meta: Uint8Array): Promise<void> {
    if (!MODULE_ID_PATTERN.test(moduleId)) throw new Error(`not a module id: ${moduleId}`);
    const final = this.file(moduleId);
    const temp = path.join(this.dir, `${moduleId}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    const digest = createHash("sha256").update(meta).update(bytes).digest("hex");
    const header = Buffer.from(`${ENTRY_MAGIC}${digest} ${meta.byteLength}\n`, "latin1");
    try {
      const handle = await open(temp, "wx", 0o600);
      try {
        await handle.writev([header, meta, bytes]);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, final);
    } catch (e: unknown) {
      await rm(temp, { force: true });
      throw e;
    }
    await this.syncDir();
    this.remember(moduleId, header.byteLength + meta.byteLength + bytes.byteLength, meta);
    await this.enforceCap(moduleId);
  }

  /** Stores bytes under moduleId atomically, then evicts least recently used entries beyond the cap. */
  async put(moduleId: string, bytes: Uint8Array, meta: Uint8Array = new Uint8Array(0)): Promise<void> {
    while (this.removing !== undefined) await this.removing.catch(() => undefined);
    const putting = this.write(moduleId, bytes, meta);
    this.puts.add(putting);
    try {
      await putting;
    } finally {
      this.puts.delete(putting);
    }
  }

  /** Deletes an entry (corrupt, or evicted for space). */
  async evict(moduleId: string): Promise<void> {
    this.forget(moduleId);
    await rm(this.file(moduleId), { force: true });
  }

  /**
   * Deletes an entry on an operator's request, pinned or not. Waits for puts under way, so an
   * entry written meanwhile is either gone afterwards or known to the index, never half of each.
   */
  remove(moduleId: string): Promise<{ removed: boolean; bytes: number }> {
    return this.exclusively(async () => {
      const size = this.index.get(moduleId)?.size;
      const existed = await stat(this.file(moduleId)).then(
        () => true,
        () => false,
      );
      await this.evict(moduleId);
      await this.flushUsage().catch((e: unknown) => this.warn("could not write the module usage file", { error: String(e) }));
      return { removed: existed || size !== undefined, bytes: size ?? 0 };
    });
  }

  /** Deletes every entry, pinned ones too, including any another process put in the directory. */
  clear(): Promise<{ removed: number; bytes: number }> {
    return this.exclusively(async () => {
      let removed = 0;
      let bytes = 0;
      for (const name of await readdir(this.dir)) {
        const id = name.slice(0, -ENTRY_SUFFIX.length);
        if (!name.endsWith(ENTRY_SUFFIX) || !MODULE_ID_PATTERN.test(id)) continue;
        bytes += this.index.get(id)?.size ?? 0;
        removed++;
        await this.evict(id);
      }
      for (const id of [...this.index.keys()]) this.forget(id);
      await this.syncDir();
      await this.flushUsage().catch((e: unknown) => this.warn("could not write the module usage file", { error: String(e) }));
      return { removed, bytes };
    });
  }

  /** Writes what usage has not reached disk yet (at shutdown). */
  async close(): Promise<void> {
    clearTimeout(this.usageTimer);
    this.usageTimer = undefined;
    await this.flushUsage().catch((e: unknown) => this.warn("could not write the module usage file", { error: String(e) }));
  }

  private async exclusively<T>(work: () => Promise<T>): Promise<T> {
    while (this.removing !== undefined) await this.removing.catch(() => undefined);
    const run = (async () => {
      await Promise.allSettled([...this.puts]);
      return work();
    })();
    this.removing = run;
    try {
      return await run;
    } finally {
      if (this.removing === run) this.removing = undefined;
    }
  }

  private remember(moduleId: string, size: number, meta: Uint8Array | undefined): IndexEntry {
    // Same id, same module: a re-read or re-written entry keeps its usage and pin.
    const old = this.index.get(moduleId);
    if (old) {
      this.index.delete(moduleId);
      this.totalBytes -= old.size;
    }
    const entry: IndexEntry = {
      size,
      meta,
      touchedAtMs: 0,
      lastUsedMs: old?.lastUsedMs ?? Date.now(),
      hits: old?.hits ?? 0,
      pinned: old?.pinned ?? false,
    };
    this.index.set(moduleId, entry);
    this.totalBytes += size;
    return entry;
  }

  private forget(moduleId: string): void {
    const old = this.index.get(moduleId);
    if (!old) return;
    this.index.delete(moduleId);
    this.totalBytes -= old.size;
    if (old.hits > 0 || old.pinned) this.usageChanged();
  }

  /** Schedules a lazy usage write, unless one is already scheduled. */
  private usageChanged(): void {
    this.usageDirty = true;
    if (this.usageTimer) return;
    this.usageTimer = setTimeout(() => {
      this.usageTimer = undefined;
      this.flushUsage().catch((e: unknown) => this.warn("could not write the module usage file", { error: String(e) }));
    }, MODULE_USAGE_FLUSH_INTERVAL_MS);
    // A pending count must not keep a stopping process alive; close() writes it.
    this.usageTimer.unref();
  }

  private flushUsage(): Promise<void> {
    const run = this.usageWrite.then(async () => {
      if (!this.usageDirty) return;
      this.usageDirty = false;
      try {
        await writeFileAtomic(path.join(this.dir, USAGE_FILE), formatUsage(this.index));
      } catch (e: unknown) {
        this.usageDirty = true;
        throw e;
      }
    });
    this.usageWrite = run.catch(() => undefined);
    return run;
  }

  /** Marks an entry most recently used, in memory now and on disk (mtime) for the next start. */
  private touch(moduleId: string, entry: IndexEntry): void {
    this.index.delete(moduleId);
    this.index.set(moduleId, entry);
    const nowMs = Date.now();
    if (nowMs - entry.touchedAtMs < TOUCH_INTERVAL_MS) return;
    entry.touchedAtMs = nowMs;
    const now = new Date(nowMs);
    utimes(this.file(moduleId), now, now).catch(() => {
      // evicted meanwhile; recency only matters for entries that exist
    });
  }

  /** Evicts the least recently used entries until under the cap, never a pinned one nor the one just written. */
  private async enforceCap(keep: string | undefined): Promise<void> {
    for (const [id, entry] of this.index) {
      if (this.totalBytes <= this.maxBytes) break;
      if (id === keep || entry.pinned) continue;
      await this.evict(id);
    }
  }

  private async syncDir(): Promise<void> {
    // The rename is durable only once the directory itself is on disk.
    try {
      const handle = await open(this.dir, "r");
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (e: unknown) {
      this.warn("could not fsync the module cache directory", { error: e instanceof Error ? e.message : String(e) });
    }
  }

  private file(moduleId: string): string {
    return path.join(this.dir, `${moduleId}${ENTRY_SUFFIX}`);
  }
}

/** The header of an entry: the hash of its body, its meta length and where the body starts. */
function parseHeader(raw: Buffer): { digest: string; metaBytes: number; bodyStart: number } | undefined {
  if (raw.toString("latin1", 0, ENTRY_MAGIC.length) !== ENTRY_MAGIC) return undefined;
  const end = raw.indexOf(0x0a, ENTRY_MAGIC.length);
  if (end < 0 || end - ENTRY_MAGIC.length > MAX_HEADER_LINE_BYTES) return undefined;
  const m = /^([0-9a-f]{64}) (\d+)$/.exec(raw.toString("latin1", ENTRY_MAGIC.length, end));
  if (!m) return undefined;
  return { digest: m[1]!, metaBytes: Number(m[2]), bodyStart: end + 1 };
}

/** Meta and module of a well-formed entry whose hash matches, else undefined. */
function decodeEntry(raw: Buffer): { meta: Uint8Array; module: Uint8Array } | undefined {
  const header = parseHeader(raw);
  if (!header) return undefined;
  const body = raw.subarray(header.bodyStart);
  if (header.metaBytes > body.byteLength) return undefined;
  if (createHash("sha256").update(body).digest("hex") !== header.digest) return undefined;
  return { meta: body.subarray(0, header.metaBytes), module: body.subarray(header.metaBytes) };
}

function usageOf(moduleId: string, entry: IndexEntry): EntryUsage {
  return { moduleId, sizeBytes: entry.size, lastUsedMs: entry.lastUsedMs, hits: entry.hits, pinned: entry.pinned };
}

/** The usage file: only entries with something to remember beyond their mtime. */
function formatUsage(index: ReadonlyMap<string, IndexEntry>): string {
  const modules: Record<string, { hits: number; lastUsedUnixMs: number; pinned: boolean }> = {};
  for (const [id, entry] of index) {
    if (entry.hits > 0 || entry.pinned) modules[id] = { hits: entry.hits, lastUsedUnixMs: entry.lastUsedMs, pinned: entry.pinned };
  }
  return JSON.stringify({ version: USAGE_VERSION, modules });
}

function parseUsage(text: string): Map<string, { hits: number; lastUsedMs: number; pinned: boolean }> | Error {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e: unknown) {
    return new Error(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const { version, modules } = (json ?? {}) as { version?: unknown; modules?: unknown };
  if (version !== USAGE_VERSION) return new Error(`version ${JSON.stringify(version)}, expected ${USAGE_VERSION}`);
  if (typeof modules !== "object" || modules === null) return new Error("`modules` is not an object");
  const usage = new Map<string, { hits: number; lastUsedMs: number; pinned: boolean }>();
  for (const [id, value] of Object.entries(modules)) {
    const { hits, lastUsedUnixMs, pinned } = (value ?? {}) as { hits?: unknown; lastUsedUnixMs?: unknown; pinned?: unknown };
    if (!MODULE_ID_PATTERN.test(id) || !Number.isSafeInteger(hits) || !Number.isSafeInteger(lastUsedUnixMs) || typeof pinned !== "boolean")
      continue;
    usage.set(id, { hits: hits as number, lastUsedMs: lastUsedUnixMs as number, pinned });
  }
  return usage;
}

/** Lowercase hex SHA-256 of some parts, each length-prefixed so boundaries cannot be forged. */
export function sha256Hex(...parts: (string | Uint8Array)[]): string {
  const hash = createHash("sha256");
  for (const part of parts) {
    const bytes = typeof part === "string" ? Buffer.from(part, "utf8") : part;
    hash.update(`${bytes.byteLength}:`);
    hash.update(bytes);
  }
  return hash.digest("hex");
}
