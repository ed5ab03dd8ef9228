import { SandboxError } from "../errors/sandbox-error.js";
import { importMemory, type MemoryLimits } from "./wasm/memory-cap.js";

/** A module compiled once for every memory limit, ready to post to workers. */
export interface CompiledModule {
  /** Workers cache modules by this key (the module id). */
  readonly key: string;
  readonly module: WebAssembly.Module;
  /** The limits the module declared for its memory; each run supplies a memory within them and its own cap. */
  readonly memory: MemoryLimits | undefined;
  /** False when the module has a wasm start function: instantiating it runs guest code, so only a run may. */
  readonly instantiateAhead: boolean;
  /** Size of the binary it was compiled from: what the registry's byte budget counts. */
  readonly bytes: number;
}

interface Entry {
  readonly compiled: Promise<CompiledModule>;
  /** Known once compiled; until then the entry counts as nothing. */
  bytes: number;
}

/**
 * In-memory LRU of compiled `WebAssembly.Module`s, bounded by the total size of their binaries.
 * The module's memory is an import (see importMemory), so the same module under any number of
 * memory limits is one entry. V8 shares a compiled module's code with every worker it is posted
 * to, so each module is compiled once, not per run or per limit.
 */
export class ModuleRegistry {
  private readonly entries = new Map<string, Entry>();
  private totalBytes = 0;

  constructor(
    private readonly onEvict: (key: string) => void,
    private readonly maxBytes: number,
  ) {}

  /** Bytes of the modules held now. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** The compiled module for an id; `load` supplies the verified bytes on a miss. */
  get(moduleId: string, load: () => Promise<Uint8Array>): Promise<CompiledModule> {
    const hit = this.entries.get(moduleId);
    if (hit) {
      // Refresh recency: Map iteration order is insertion order.
      this.entries.delete(moduleId);
      this.entries.set(moduleId, hit);
      return hit.compiled;
    }
    const entry: Entry = { compiled: this.compile(moduleId, load), bytes: 0 };
    this.entries.set(moduleId, entry);
    entry.compiled.then(
      (c) => {
        if (this.entries.get(moduleId) !== entry) return;
        entry.bytes = c.bytes;
        this.totalBytes += c.bytes;
        this.evictBeyondBudget();
      },
      () => {
        if (this.entries.get(moduleId) === entry) this.entries.delete(moduleId);
      },
    );
    return entry.compiled;
  }

  /** Drops a module (the operator evicted or blocked it); runs already holding it finish. False when it was not held. */
  evict(moduleId: string): boolean {
    const entry = this.entries.get(moduleId);
    if (!entry) return false;
    this.entries.delete(moduleId);
    this.totalBytes -= entry.bytes;
    this.onEvict(moduleId);
    return true;
  }

  /** Drops every module; runs already holding one finish. */
  clear(): void {
    for (const moduleId of [...this.entries.keys()]) this.evict(moduleId);
  }

  /** Drops the least recently used modules until the rest fit, always keeping the newest one. */
  private evictBeyondBudget(): void {
    for (const [key, entry] of this.entries) {
      if (this.totalBytes <= this.maxBytes || this.entries.size <= 1) return;
      if (entry.bytes === 0) continue; // still compiling: it is about to be used
      this.entries.delete(key);
      this.totalBytes -= entry.bytes;
      this.onEvict(key);
    }
  }

  private async compile(key: string, load: () => Promise<Uint8Array>): Promise<CompiledModule> {
    const bytes = await load();
    const rewritten = importMemory(bytes);
    if (!rewritten.ok) throw new SandboxError("INVALID_WASM", rewritten.error);
    try {
      const module = await WebAssembly.compile(rewritten.wasm);
      return { key, module, memory: rewritten.memory, instantiateAhead: !rewritten.startFunction, bytes: bytes.byteLength };
    } catch (e: unknown) {
      throw new SandboxError("INVALID_WASM", `module does not compile: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}
