/**
 * The operator's view of compiled modules: list and describe them, evict them from memory and
 * disk, pin them against LRU eviction, block ids from compiling or running. Core code: plain
 * inputs, SandboxError out; src/grpc/admin-service.ts serves it on the admin socket only.
 */
import { SandboxError } from "../errors/sandbox-error.js";
import { DEFAULT_ADMIN_PAGE_SIZE, MAX_ADMIN_PAGE_SIZE, MAX_BLOCK_REASON_BYTES } from "../limits.js";
import { MODULE_ID_PATTERN, type ModuleStore } from "../cache/module-store.js";
import { decodeProvenance, type ModuleOrigin, type ToolchainRecord } from "../compiler/module-meta.js";
import type { BlockEntry, ModuleBlocklist } from "../policy/module-blocklist.js";
import type { ModuleRegistry } from "../runtime/module-registry.js";

/** What the daemon knows about one module id. */
export interface ModuleInfo {
  readonly moduleId: string;
  /** An entry for it is in the on-disk cache. */
  readonly cached: boolean;
  readonly sizeBytes: number;
  /** Undefined when not recorded (old entries) or not cached. */
  readonly origin: ModuleOrigin | undefined;
  /** 0 when unknown. */
  readonly createdUnixMs: number;
  readonly lastUsedUnixMs: number;
  readonly hits: number;
  readonly pinned: boolean;
  readonly block: BlockEntry | undefined;
  /** The entry is a cached compile failure of a source (diagnostics, no module). */
  readonly compileFailed: boolean;
}

/** ModuleInfo plus the toolchain that built it. */
export interface ModuleDetails extends ModuleInfo {
  readonly toolchain: ToolchainRecord | undefined;
}

/** One page of ListModules, with the totals of the whole cache. */
export interface ModulePage {
  readonly modules: readonly ModuleInfo[];
  /** The last id of this page when more follow, else "". */
  readonly nextPageToken: string;
  readonly cachedModules: number;
  readonly cachedBytes: number;
  readonly cacheMaxBytes: number;
  readonly blockedModules: number;
}

/** Module management over the store (disk), the registry (memory) and the blocklist. */
export class ModuleAdmin {
  constructor(
    private readonly store: ModuleStore,
    private readonly registry: ModuleRegistry,
    private readonly blocklist: ModuleBlocklist,
  ) {}

  /** Cached and blocked ids in id order, from just after `pageToken`. */
  async list(pageSize: number, pageToken: string): Promise<ModulePage> {
    if (pageToken !== "" && !MODULE_ID_PATTERN.test(pageToken)) {
      throw new SandboxError("INVALID_REQUEST", "page_token must be empty or the next_page_token of a previous page");
    }
    const size = pageSize === 0 ? DEFAULT_ADMIN_PAGE_SIZE : Math.min(pageSize, MAX_ADMIN_PAGE_SIZE);
    const ids = [...new Set([...this.store.usages().map((u) => u.moduleId), ...this.blocklist.ids()])]
      .filter((id) => id > pageToken)
      .sort();
    const page = ids.slice(0, size);
    const stats = this.store.stats();
    return {
      modules: await this.describeAll(page),
      nextPageToken: ids.length > size ? page[page.length - 1]! : "",
      cachedModules: stats.entries,
      cachedBytes: stats.bytes,
      cacheMaxBytes: stats.maxBytes,
      blockedModules: this.blocklist.size,
    };
  }

  /** One module, cached or blocked; MODULE_NOT_FOUND when it is neither. */
  async get(moduleId: string): Promise<ModuleDetails> {
    checkModuleId(moduleId);
    const details = await this.describe(moduleId);
    if (!details) throw notFound(moduleId);
    return details;
  }

  /** Removes a module from disk and memory (pinned or not); MODULE_NOT_FOUND when it was in neither. */
  async evict(moduleId: string): Promise<{ fromDisk: boolean; fromMemory: boolean }> {
    checkModuleId(moduleId);
    // Disk first: a run loading it meanwhile then finds nothing to put back into memory.
    const { removed } = await this.store.remove(moduleId);
    const fromMemory = this.registry.evict(moduleId);
    if (!removed && !fromMemory) throw notFound(moduleId);
    return { fromDisk: removed, fromMemory };
  }

  /** Removes every module from disk and memory; the blocklist stays. */
  async clear(): Promise<{ removed: number; bytes: number }> {
    const cleared = await this.store.clear();
    this.registry.clear();
    return cleared;
  }

  /** Pins or unpins a cached module; MODULE_NOT_FOUND when it is not cached. */
  async setPinned(moduleId: string, pinned: boolean): Promise<ModuleInfo> {
    checkModuleId(moduleId);
    if (!(await this.store.setPinned(moduleId, pinned))) throw notFound(moduleId);
    return (await this.describe(moduleId)) ?? this.absent(moduleId);
  }

  /** Blocks an id (cached or not, known or not) durably, then evicts it from disk and memory. */
  async block(moduleId: string, reason: string, nowMs: number): Promise<ModuleInfo> {
    checkModuleId(moduleId);
    if (Buffer.byteLength(reason) > MAX_BLOCK_REASON_BYTES) {
      throw new SandboxError("INVALID_REQUEST", `reason exceeds ${MAX_BLOCK_REASON_BYTES} bytes`);
    }
    await this.blocklist.block(moduleId, reason, nowMs);
    await this.store.remove(moduleId);
    this.registry.evict(moduleId);
    return (await this.describe(moduleId)) ?? this.absent(moduleId);
  }

  /** Lifts a block (a no-op when there is none); the module must be compiled again to run. */
  async unblock(moduleId: string): Promise<ModuleInfo> {
    checkModuleId(moduleId);
    await this.blocklist.unblock(moduleId);
    return (await this.describe(moduleId)) ?? this.absent(moduleId);
  }

  /** One at a time: a page of a thousand entries must not open a thousand files at once. */
  private async describeAll(ids: readonly string[]): Promise<ModuleInfo[]> {
    const described: ModuleInfo[] = [];
    for (const id of ids) described.push((await this.describe(id)) ?? this.absent(id));
    return described;
  }

  /** Everything known about an id, or undefined when it is neither cached nor blocked. */
  private async describe(moduleId: string): Promise<ModuleDetails | undefined> {
    const usage = this.store.usage(moduleId);
    const block = this.blocklist.get(moduleId);
    if (!usage && !block) return undefined;
    const meta = usage ? decodeProvenance(await this.store.describe(moduleId)) : undefined;
    return {
      moduleId,
      cached: usage !== undefined,
      sizeBytes: usage?.sizeBytes ?? 0,
      origin: meta?.origin,
      createdUnixMs: meta?.createdUnixMs ?? 0,
      lastUsedUnixMs: usage?.lastUsedMs ?? 0,
      hits: usage?.hits ?? 0,
      pinned: usage?.pinned ?? false,
      block,
      compileFailed: meta?.compileFailed ?? false,
      toolchain: meta?.toolchain,
    };
  }

  /** An id evicted between listing and describing it, or after a change: known, but nothing left of it. */
  private absent(moduleId: string): ModuleDetails {
    return {
      moduleId,
      cached: false,
      sizeBytes: 0,
      origin: undefined,
      createdUnixMs: 0,
      lastUsedUnixMs: 0,
      hits: 0,
      pinned: false,
      block: this.blocklist.get(moduleId),
      compileFailed: false,
      toolchain: undefined,
    };
  }
}

function checkModuleId(moduleId: string): void {
  if (!MODULE_ID_PATTERN.test(moduleId))
    throw new SandboxError("INVALID_MODULE_ID", "module_id must be 64 lowercase hex characters (a SHA-256)");
}

function notFound(moduleId: string): SandboxError {
  return new SandboxError("MODULE_NOT_FOUND", `no module ${moduleId} is cached or blocked`);
}
