import { SandboxError } from "../errors/sandbox-error.js";
import { meterFuel } from "./wasm/fuel-meter.js";
import { importMemory, type MemoryLimits } from "./wasm/memory-cap.js";

/** Suffix of the registry (and worker) key of a module's fuel-metered variant. */
const METERED_KEY_SUFFIX = "+fuel";

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
  /** Whether this is the fuel-metered variant (see fuel-meter.ts). */
  readonly metered: boolean;
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

  /**
   * The compiled module for an id, fuel-metered or not (the two are cached apart, so runs without a
   * fuel limit keep the uninstrumented module); `load` supplies the verified bytes on a miss.
   */
  get(moduleId: string, load: () => Promise<Uint8Array>, metered = false): Promise<CompiledModule> {
    const key = metered ? moduleId + METERED_KEY_SUFFIX : moduleId;
    const hit = this.entries.get(key);
    if (hit) {
      // Refresh recency: Map iteration order is insertion order.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.compiled;
    }
    const entry: Entry = { compiled: this.compile(key, load, metered), bytes: 0 };
    this.entries.set(key, entry);
    entry.compiled.then(
      (c) => {
        if (this.entries.get(key) !== entry) return;
        entry.bytes = c.bytes;
        this.totalBytes += c.bytes;
        this.evictBeyondBudget();
      },
      () => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      },
    );
    return entry.compiled;
  }

  /** Drops a module and its metered variant (the operator evicted or blocked it); runs already holding it finish. False when neither was held. */
  evict(moduleId: string): boolean {
    const plain = this.drop(moduleId);
    const metered = this.drop(moduleId + METERED_KEY_SUFFIX);
    return plain || metered;
  }

  /** Drops every module; runs already holding one finish. */
  clear(): void {
    for (const key of [...this.entries.keys()]) this.drop(key);
  }

  private drop(key: string): boolean {
    const entry = this.entries.get(key);
    if (!entry) return false;
    this.entries.delete(key);
    this.totalBytes -= entry.bytes;
    this.onEvict(key);
    return true;
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

  private async compile(key: string, load: () => Promise<Uint8Array>, metered: boolean): Promise<CompiledModule> {
    const bytes = await load();
    let source: Uint8Array = bytes;
    if (metered) {
      const instrumented = meterFuel(bytes);
      if (!instrumented.ok) throw new SandboxError("INVALID_WASM", instrumented.error);
      source = instrumented.wasm;
    }
    const rewritten = importMemory(source);
    if (!rewritten.ok) throw new SandboxError("INVALID_WASM", rewritten.error);
    try {
      const module = await WebAssembly.compile(rewritten.wasm);
      // A metered module's start function is an export (see fuel-meter.ts): instantiating it runs no guest code.
      return { key, module, memory: rewritten.memory, instantiateAhead: !rewritten.startFunction, bytes: bytes.byteLength, metered };
    } catch (e: unknown) {
      throw new SandboxError("INVALID_WASM", `module does not compile: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}
