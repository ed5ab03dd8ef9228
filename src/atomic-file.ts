import { randomBytes } from "node:crypto";
import { open, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";

/** Suffix of a replacement being written; one left behind was cut short by a crash. */
const TEMP_SUFFIX = ".tmp";

/**
 * Replaces `file` with `data` so that a crash (even kill -9 or power loss) leaves
 * either the old contents or the new, never a mix: temp file in the same
 * directory, fsync, rename over the old one, fsync of the directory.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const temp = `${file}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`;
  try {
    const handle = await open(temp, "wx", mode);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (e: unknown) {
    await rm(temp, { force: true });
    throw e;
  }
  // The rename is durable only once the directory itself is on disk.
  const dir = await open(path.dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Deletes replacements of `file` that a crash left half-written (their names start with its name). */
export async function removeAbandonedWrites(file: string): Promise<void> {
  const base = path.basename(file);
  let names: string[];
  try {
    names = await readdir(path.dirname(file));
  } catch {
    return;
  }
  for (const name of names) {
    if (name.startsWith(`${base}.`) && name.endsWith(TEMP_SUFFIX)) await rm(path.join(path.dirname(file), name), { force: true });
  }
}
