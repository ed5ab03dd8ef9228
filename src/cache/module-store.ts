import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";

/** A module id: lowercase hex SHA-256. */
export const MODULE_ID_PATTERN = /^[0-9a-f]{64}$/;

/**
 * Content-addressed on-disk store of module binaries under the cache dir.
 * Writes are atomic (temp file, fsync, rename) so a crash never leaves a
 * half-written module under its final name.
 */
export class ModuleStore {
  private constructor(private readonly dir: string) {}

  /** Opens (creating if needed) the store in `cacheDir`. */
  static async open(cacheDir: string): Promise<ModuleStore> {
    const dir = path.join(cacheDir, "modules");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new ModuleStore(dir);
  }

  /** The module's bytes, or undefined when it is not stored. */
  async get(moduleId: string): Promise<Uint8Array | undefined> {
    if (!MODULE_ID_PATTERN.test(moduleId)) return undefined;
    try {
      return await readFile(this.file(moduleId));
    } catch (e: unknown) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  /** Stores bytes under moduleId atomically. */
  async put(moduleId: string, bytes: Uint8Array): Promise<void> {
    const final = this.file(moduleId);
    const temp = `${final}.${randomBytes(6).toString("hex")}.tmp`;
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, final);
    } catch (e: unknown) {
      await rm(temp, { force: true });
      throw e;
    }
  }

  private file(moduleId: string): string {
    return path.join(this.dir, `${moduleId}.wasm`);
  }
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
