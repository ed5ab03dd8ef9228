import { SandboxError } from "../errors/sandbox-error.js";
import { capMemory } from "./wasm/memory-cap.js";

/** Compiled modules kept in memory; each is posted once to each worker that runs it. */
export const MAX_COMPILED_MODULES = 128;

/** WebAssembly page size, fixed by the spec. */
const WASM_PAGE_BYTES = 65_536;

/** A module compiled for one memory limit, ready to post to workers. */
export interface CompiledModule {
  /** Identifies module id + memory cap; workers cache by this key. */
  readonly key: string;
  readonly module: WebAssembly.Module;
}

/**
 * In-memory LRU of compiled `WebAssembly.Module`s. The memory limit is baked
 * into the binary (its memory maximum is rewritten), so the same module under
 * two limits is two entries. V8 shares a compiled module's code with every
 * worker it is posted to, so each is compiled once per limit, not per run.
 */
export class ModuleRegistry {
  private readonly entries = new Map<string, Promise<CompiledModule>>();

  constructor(
    private readonly onEvict: (key: string) => void,
    private readonly capacity = MAX_COMPILED_MODULES,
  ) {}

  /** The compiled module for id under a memory limit; `load` supplies the verified bytes on a miss. */
  get(moduleId: string, memoryLimitBytes: number, load: () => Promise<Uint8Array>): Promise<CompiledModule> {
    const pages = Math.floor(memoryLimitBytes / WASM_PAGE_BYTES);
    const key = `${moduleId}/${pages}`;
    const hit = this.entries.get(key);
    if (hit) {
      // Refresh recency: Map iteration order is insertion order.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const compiled = this.compile(key, pages, load);
    this.entries.set(key, compiled);
    compiled.catch(() => this.entries.delete(key));
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
      this.onEvict(oldest);
    }
    return compiled;
  }

  /** Drops every compiled copy of a module (one per memory limit); runs already holding one finish. Returns how many. */
  evict(moduleId: string): number {
    let dropped = 0;
    for (const key of [...this.entries.keys()]) {
      if (!key.startsWith(`${moduleId}/`)) continue;
      this.entries.delete(key);
      this.onEvict(key);
      dropped++;
    }
    return dropped;
  }

  /** Drops every compiled module; runs already holding one finish. */
  clear(): void {
    for (const key of [...this.entries.keys()]) {
      this.entries.delete(key);
      this.onEvict(key);
    }
  }

  private async compile(key: string, pages: number, load: () => Promise<Uint8Array>): Promise<CompiledModule> {
    const capped = capMemory(await load(), pages * WASM_PAGE_BYTES);
    if (!capped.ok) throw new SandboxError("INVALID_WASM", capped.error);
    try {
      return { key, module: await WebAssembly.compile(capped.wasm as Uint8Array<ArrayBuffer>) };
    } catch (e: unknown) {
      throw new SandboxError("INVALID_WASM", `module does not compile: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}
