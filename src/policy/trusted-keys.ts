import { createPublicKey, type KeyObject } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** File name suffix of a trusted public key: `<key_id>.pub`. */
export const PUBLIC_KEY_SUFFIX = ".pub";

/** PEM header of an SPKI public key; anything else in a .pub file is refused. */
const SPKI_PEM_HEADER = "-----BEGIN PUBLIC KEY-----";

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
  /** Replaced as a whole on reload, so a lookup never sees a half-read directory. */
  #keys: ReadonlyMap<string, KeyObject>;
  /** Reloads run one after another, so a slow older read never overwrites a newer one. */
  #reloading: Promise<void> = Promise.resolve();

  private constructor(dir: string | undefined, onProblem: ProblemReporter, keys: ReadonlyMap<string, KeyObject>) {
    this.#dir = dir;
    this.#onProblem = onProblem;
    this.#keys = keys;
  }

  /**
   * Loads every `<key_id>.pub` in `dir` (no directory = no trusted keys, so only
   * --allow-unsigned runs can succeed). Rejects if the directory itself cannot be
   * read: at startup that is an operator mistake worth stopping for.
   */
  static async load(dir: string | undefined, onProblem: ProblemReporter = () => {}): Promise<TrustedKeys> {
    if (dir === undefined) return new TrustedKeys(undefined, onProblem, new Map());
    const keys = await readKeyDir(dir, onProblem);
    return new TrustedKeys(dir, onProblem, keys);
  }

  /**
   * Re-reads the directory (on SIGHUP) and swaps in the fresh set in one step:
   * added keys become trusted, removed keys stop being trusted. If the directory
   * was removed, nothing is trusted any more (the operator revoked everything); if
   * it cannot be read for another reason (permissions, I/O), the problem is
   * reported and the previous set stays, so a transient error is not an outage.
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
      this.#keys = await readKeyDir(this.#dir, this.#onProblem);
    } catch (e: unknown) {
      if (isErrnoException(e) && e.code === "ENOENT") {
        this.#onProblem(`trusted key directory ${this.#dir} no longer exists; no key is trusted now`);
        this.#keys = new Map();
        return;
      }
      this.#onProblem(`cannot read trusted key directory ${this.#dir} (${describe(e)}); keeping the ${this.#keys.size} key(s) loaded before`);
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

/** Reads one key directory into a fresh map; rejects only if the directory cannot be listed. */
async function readKeyDir(dir: string, onProblem: ProblemReporter): Promise<Map<string, KeyObject>> {
  const entries = await readdir(dir, { withFileTypes: true });
  const keys = new Map<string, KeyObject>();
  for (const entry of entries) {
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
  let pem: string;
  try {
    pem = await readFile(file, "utf8");
  } catch (e: unknown) {
    return `cannot read it (${describe(e)})`;
  }
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
  return KEY_ID_PATTERN.test(keyId) ? undefined : `key id "${keyId}" must be 1-128 characters of A-Z a-z 0-9 . _ - and start with a letter or digit`;
}
