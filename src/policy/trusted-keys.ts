import { createPublicKey, type KeyObject } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { open, readdir, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { MAX_TRUSTED_KEY_FILE_BYTES, TRUSTED_KEYS_RELOAD_TIMEOUT_MS } from "../limits.js";

/** File name suffix of a trusted public key: `<key_id>.pub`. */
export const PUBLIC_KEY_SUFFIX = ".pub";

/** PEM header of an SPKI public key; anything else in a .pub file is refused. */
const SPKI_PEM_HEADER = "-----BEGIN PUBLIC KEY-----";

/**
 * A key file is opened without following a symlink and without waiting: opening
 * a FIFO for reading would otherwise block until a writer came, and since
 * reloads run one after another, every later reload (a key's removal among
 * them) would wait behind it for ever.
 */
const KEY_FILE_OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** Receives one human-readable sentence per key file (or directory) that could not be used. */
export type ProblemReporter = (message: string) => void;

/**
 * The set of Ed25519 public keys the daemon trusts, read from `<dir>/<key_id>.pub`
 * (PEM SPKI). Several keys may be trusted at once so an authority can rotate keys
 * without downtime. A malformed file is reported and skipped: one bad file must
 * never take the other keys (and so every policy signed by them) down with it.
 */
export class TrustedKeys {
  readonly #dir: string | undefined;
  readonly #onProblem: ProblemReporter;
  readonly #timeoutMs: number;
  /** Replaced as a whole on reload, so a lookup never sees a half-read directory. */
  #keys: ReadonlyMap<string, KeyObject>;
  /** Reloads run one after another, so a slow older read never overwrites a newer one. */
  #reloading: Promise<void> = Promise.resolve();

  private constructor(dir: string | undefined, onProblem: ProblemReporter, timeoutMs: number, keys: ReadonlyMap<string, KeyObject>) {
    this.#dir = dir;
    this.#onProblem = onProblem;
    this.#timeoutMs = timeoutMs;
    this.#keys = keys;
  }

  /**
   * Loads every `<key_id>.pub` in `dir` (no directory = no trusted keys, so only
   * --allow-unsigned runs can succeed). Rejects if the directory itself cannot be
   * read, or not within `timeoutMs`: at startup that is an operator mistake worth
   * stopping for. Every later reload has the same time budget.
   */
  static async load(
    dir: string | undefined,
    onProblem: ProblemReporter = () => {},
    timeoutMs = TRUSTED_KEYS_RELOAD_TIMEOUT_MS,
  ): Promise<TrustedKeys> {
    if (dir === undefined) return new TrustedKeys(undefined, onProblem, timeoutMs, new Map());
    const keys = await readKeyDirWithin(dir, onProblem, timeoutMs);
    return new TrustedKeys(dir, onProblem, timeoutMs, keys);
  }

  /**
   * Re-reads the directory (on SIGHUP) and swaps in the fresh set in one step:
   * added keys become trusted, removed keys stop being trusted. If the directory
   * was removed, nothing is trusted any more (the operator revoked everything); if
   * it cannot be read for another reason (permissions, I/O), the problem is
   * reported and the previous set stays, so a transient error is not an outage.
   * A read that takes longer than the time budget is abandoned the same way, so
   * the reloads queued behind it still run.
   */
  async reload(): Promise<void> {
    const next = this.#reloading.then(() => this.#reloadNow());
    // Keep the chain alive even if this reload fails; the caller still sees the failure.
    this.#reloading = next.catch(() => {});
    return next;
  }

  async #reloadNow(): Promise<void> {
    if (this.#dir === undefined) return;
    try {
      this.#keys = await readKeyDirWithin(this.#dir, this.#onProblem, this.#timeoutMs);
    } catch (e: unknown) {
      if (isErrnoException(e) && e.code === "ENOENT") {
        this.#onProblem(`trusted key directory ${this.#dir} no longer exists; no key is trusted now`);
        this.#keys = new Map();
        return;
      }
      this.#onProblem(
        `cannot read trusted key directory ${this.#dir} (${describe(e)}); keeping the ${this.#keys.size} key(s) loaded before`,
      );
    }
  }

  /** The public key named `keyId`, or undefined if it is not trusted. */
  get(keyId: string): KeyObject | undefined {
    return this.#keys.get(keyId);
  }

  /** Number of keys currently trusted. */
  get size(): number {
    return this.#keys.size;
  }

  /** Ids of the keys currently trusted, sorted (for logs). */
  ids(): string[] {
    return [...this.#keys.keys()].sort();
  }
}

/** readKeyDir, abandoned (and rejecting) after `timeoutMs`; an abandoned read stops at its next file. */
async function readKeyDirWithin(dir: string, onProblem: ProblemReporter, timeoutMs: number): Promise<Map<string, KeyObject>> {
  const abandon = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`reading ${dir} took longer than ${timeoutMs} ms`);
      abandon.abort(error);
      reject(error);
    }, timeoutMs);
  });
  try {
    // race() subscribes to both, so the abandoned read's later rejection is handled.
    return await Promise.race([readKeyDir(dir, onProblem, abandon.signal), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads one key directory into a fresh map; rejects only if the directory cannot be listed, or on `signal`. */
async function readKeyDir(dir: string, onProblem: ProblemReporter, signal: AbortSignal): Promise<Map<string, KeyObject>> {
  const entries = await readdir(dir, { withFileTypes: true });
  const keys = new Map<string, KeyObject>();
  for (const entry of entries) {
    signal.throwIfAborted();
    if (!entry.name.endsWith(PUBLIC_KEY_SUFFIX)) continue;
    const keyId = entry.name.slice(0, -PUBLIC_KEY_SUFFIX.length);
    const file = join(dir, entry.name);
    if (keyId === "") {
      onProblem(`skipping trusted key file ${file}: the key id (file name before ${PUBLIC_KEY_SUFFIX}) is empty`);
      continue;
    }
    const parsed = await readPublicKey(file);
    if (typeof parsed === "string") {
      onProblem(`skipping trusted key file ${file}: ${parsed}`);
      continue;
    }
    keys.set(keyId, parsed);
  }
  return keys;
}

/** Parses one key file; returns the key, or a sentence saying why it is unusable. */
async function readPublicKey(file: string): Promise<KeyObject | string> {
  const pem = await readKeyFile(file);
  if (pem instanceof Error) return pem.message;
  // createPublicKey would happily derive a public key from a private one; a private
  // key in the trust directory is a leak to flag, not something to use quietly.
  if (!pem.includes(SPKI_PEM_HEADER)) return `not a PEM SPKI public key (expected "${SPKI_PEM_HEADER}")`;
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (e: unknown) {
    return `not a valid PEM public key (${describe(e)})`;
  }
  if (key.asymmetricKeyType !== "ed25519") return `key type is ${key.asymmetricKeyType ?? "unknown"}, expected ed25519`;
  return key;
}

/**
 * The text of a key file if it is a regular file of at most
 * MAX_TRUSTED_KEY_FILE_BYTES, else an Error saying what it is instead.
 */
async function readKeyFile(file: string): Promise<string | Error> {
  let handle: FileHandle;
  try {
    handle = await open(file, KEY_FILE_OPEN_FLAGS);
  } catch (e: unknown) {
    if (isErrnoException(e) && e.code === "ELOOP")
      return new Error("it is a symbolic link (key files must be regular files in the directory itself)");
    return new Error(`cannot open it (${describe(e)})`);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) return new Error(`it is ${fileKind(stats)}, not a regular file`);
    if (stats.size > MAX_TRUSTED_KEY_FILE_BYTES) return tooLarge(stats.size);
    // Read one byte past the cap: the file may have grown since fstat.
    const buffer = Buffer.alloc(MAX_TRUSTED_KEY_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_TRUSTED_KEY_FILE_BYTES) return tooLarge(length);
    }
    return buffer.toString("utf8", 0, length);
  } catch (e: unknown) {
    return new Error(`cannot read it (${describe(e)})`);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function tooLarge(bytes: number): Error {
  return new Error(`it has ${bytes} bytes, more than the ${MAX_TRUSTED_KEY_FILE_BYTES} a key file may have`);
}

function fileKind(stats: Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "a device";
  return "of an unknown kind";
}

function isErrnoException(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && "code" in e;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Key ids sandboxctl accepts: safe as a file name on every platform, never hidden, never a path. */
const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Returns why `keyId` is not a usable key id for new keys, or undefined if it is. */
export function keyIdProblem(keyId: string): string | undefined {
  return KEY_ID_PATTERN.test(keyId)
    ? undefined
    : `key id "${keyId}" must be 1-128 characters of A-Z a-z 0-9 . _ - and start with a letter or digit`;
}
