import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_CACHE_MAX_BYTES } from "../limits.js";

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
 * - Total size is capped; eviction is least recently used (file mtimes carry recency across restarts).
 */
export class ModuleStore {
  /** id → entry, in recency order (Map iteration order is insertion order). */
  private readonly index = new Map<string, IndexEntry>();
  private totalBytes = 0;

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
    for (const f of found) this.remember(f.id, f.size, undefined);
    await this.enforceCap(undefined);
  }

  /** Number of entries and their total size on disk. */
  stats(): { entries: number; bytes: number; maxBytes: number } {
    return { entries: this.index.size, bytes: this.totalBytes, maxBytes: this.maxBytes };
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

  /** Stores bytes under moduleId atomically, then evicts least recently used entries beyond the cap. */
  async put(moduleId: string, bytes: Uint8Array, meta: Uint8Array = new Uint8Array(0)): Promise<void> {
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

  /** Deletes an entry (corrupt, or evicted for space). */
  async evict(moduleId: string): Promise<void> {
    this.forget(moduleId);
    await rm(this.file(moduleId), { force: true });
  }

  private remember(moduleId: string, size: number, meta: Uint8Array | undefined): IndexEntry {
    this.forget(moduleId);
    const entry: IndexEntry = { size, meta, touchedAtMs: 0 };
    this.index.set(moduleId, entry);
    this.totalBytes += size;
    return entry;
  }

  private forget(moduleId: string): void {
    const old = this.index.get(moduleId);
    if (!old) return;
    this.index.delete(moduleId);
    this.totalBytes -= old.size;
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

  /** Evicts the least recently used entries until under the cap, never the one just written. */
  private async enforceCap(keep: string | undefined): Promise<void> {
    for (const [id] of this.index) {
      if (this.totalBytes <= this.maxBytes) break;
      if (id === keep) continue;
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

/** Meta and module of a well-formed entry whose hash matches, else undefined. */
function decodeEntry(raw: Buffer): { meta: Uint8Array; module: Uint8Array } | undefined {
  if (raw.toString("latin1", 0, ENTRY_MAGIC.length) !== ENTRY_MAGIC) return undefined;
  const end = raw.indexOf(0x0a, ENTRY_MAGIC.length);
  if (end < 0 || end - ENTRY_MAGIC.length > MAX_HEADER_LINE_BYTES) return undefined;
  const m = /^([0-9a-f]{64}) (\d+)$/.exec(raw.toString("latin1", ENTRY_MAGIC.length, end));
  if (!m) return undefined;
  const metaBytes = Number(m[2]);
  const body = raw.subarray(end + 1);
  if (metaBytes > body.byteLength) return undefined;
  if (createHash("sha256").update(body).digest("hex") !== m[1]) return undefined;
  return { meta: body.subarray(0, metaBytes), module: body.subarray(metaBytes) };
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
