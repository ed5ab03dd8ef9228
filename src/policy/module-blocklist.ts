import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { SandboxError } from "../errors/sandbox-error.js";
import { removeAbandonedWrites, writeFileAtomic } from "../atomic-file.js";
import { MODULE_ID_PATTERN } from "../cache/module-store.js";

/** Name of the blocklist inside the cache dir: it lives beside the modules it refuses. */
export const BLOCKLIST_FILE = "blocklist.json";

/** Version of the file's layout; a file with another version is refused rather than misread. */
const BLOCKLIST_VERSION = 1;

/** One blocked module id. */
export interface BlockEntry {
  readonly blockedUnixMs: number;
  /** The operator's note; never sent to the clients it refuses. */
  readonly reason: string;
}

/**
 * The operator's list of module ids that must never compile or run again, kept in
 * `<cacheDir>/blocklist.json`. Every change is written atomically before it takes
 * effect, so a block that was acknowledged survives a crash and a restart. A file
 * that cannot be read refuses the daemon's start: running without it would run
 * exactly the modules it names.
 */
export class ModuleBlocklist {
  /** Changes are applied one at a time, each to the state the previous one left. */
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly file: string | undefined,
    private entries: ReadonlyMap<string, BlockEntry>,
  ) {}

  /** Loads the blocklist of a cache dir (empty when there is none yet). Throws when the file is unreadable or invalid. */
  static async open(cacheDir: string): Promise<ModuleBlocklist> {
    await mkdir(cacheDir, { recursive: true, mode: 0o700 });
    const file = path.join(cacheDir, BLOCKLIST_FILE);
    await removeAbandonedWrites(file);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e: unknown) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return new ModuleBlocklist(file, new Map());
      throw new Error(`cannot read the module blocklist ${file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const parsed = parseBlocklist(text);
    if (parsed instanceof Error) {
      throw new Error(
        `the module blocklist ${file} is invalid (${parsed.message}); sandboxd will not run without the modules it blocks: repair it, or remove it to lift every block`,
      );
    }
    return new ModuleBlocklist(file, parsed);
  }

  /** A blocklist that blocks nothing and is never written (for tools and tests that embed the compiler). */
  static empty(): ModuleBlocklist {
    return new ModuleBlocklist(undefined, new Map());
  }

  /** Number of blocked ids. */
  get size(): number {
    return this.entries.size;
  }

  /** The block on an id, if any. */
  get(moduleId: string): BlockEntry | undefined {
    return this.entries.get(moduleId);
  }

  /** Every blocked id. */
  ids(): string[] {
    return [...this.entries.keys()];
  }

  /** Throws MODULE_BLOCKED when the id is blocked; the first line of Compile and Execute for it. */
  check(moduleId: string): void {
    if (this.entries.has(moduleId)) {
      throw new SandboxError("MODULE_BLOCKED", `module ${moduleId} is blocked by the daemon's operator`, {
        metadata: { module_id: moduleId },
      });
    }
  }

  /** Blocks an id (again: the note is replaced, the time kept) once the change is on disk. */
  block(moduleId: string, reason: string, nowMs: number): Promise<BlockEntry> {
    return this.change((next) => {
      const entry = { blockedUnixMs: next.get(moduleId)?.blockedUnixMs ?? nowMs, reason };
      next.set(moduleId, entry);
      return entry;
    });
  }

  /** Lifts the block on an id once the change is on disk; false when it was not blocked. */
  unblock(moduleId: string): Promise<boolean> {
    return this.change((next) => next.delete(moduleId));
  }

  private change<T>(apply: (next: Map<string, BlockEntry>) => T): Promise<T> {
    const done = this.writing.then(async () => {
      const next = new Map(this.entries);
      const result = apply(next);
      if (this.file) await writeFileAtomic(this.file, formatBlocklist(next));
      this.entries = next;
      return result;
    });
    this.writing = done.catch(() => undefined);
    return done;
  }
}

function formatBlocklist(entries: ReadonlyMap<string, BlockEntry>): string {
  const blocked: Record<string, BlockEntry> = {};
  for (const [id, entry] of [...entries].sort(([a], [b]) => (a < b ? -1 : 1))) blocked[id] = entry;
  return JSON.stringify({ version: BLOCKLIST_VERSION, blocked }, null, 2) + "\n";
}

/** The blocklist a file holds, or what is wrong with it. */
function parseBlocklist(text: string): Map<string, BlockEntry> | Error {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e: unknown) {
    return new Error(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof json !== "object" || json === null) return new Error("not a JSON object");
  const { version, blocked } = json as { version?: unknown; blocked?: unknown };
  if (version !== BLOCKLIST_VERSION) return new Error(`version ${JSON.stringify(version)}, expected ${BLOCKLIST_VERSION}`);
  if (typeof blocked !== "object" || blocked === null || Array.isArray(blocked)) return new Error("`blocked` is not an object");
  const entries = new Map<string, BlockEntry>();
  for (const [id, value] of Object.entries(blocked)) {
    if (!MODULE_ID_PATTERN.test(id)) return new Error(`${JSON.stringify(id)} is not a module id`);
    const { blockedUnixMs, reason } = (value ?? {}) as { blockedUnixMs?: unknown; reason?: unknown };
    if (typeof blockedUnixMs !== "number" || !Number.isSafeInteger(blockedUnixMs) || blockedUnixMs < 0 || typeof reason !== "string") {
      return new Error(`the entry of ${id} needs a blockedUnixMs (integer) and a reason (string)`);
    }
    entries.set(id, { blockedUnixMs, reason });
  }
  return entries;
}
