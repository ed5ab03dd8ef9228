/**
 * The authenticated record the shared module cache keeps per module id, and the cluster keys that
 * sign it. Pure logic: no I/O beyond reading the key file, so every way a record can be forged is
 * unit-testable.
 *
 * A module id hashes a compile's inputs, not its output, so anyone who can write to the shared
 * store could otherwise map someone else's id to their own module and have it run under the
 * grants of a policy bound to that id. The record therefore carries the module's SHA-256 and size
 * and is authenticated with HMAC-SHA256 over a domain tag, the module id and the record's exact
 * bytes: it cannot be altered, and it cannot be replayed under another id.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { REMOTE_CACHE_MAX_KEY_FILE_BYTES, REMOTE_CACHE_MIN_KEY_BYTES } from "../limits.js";
import { MODULE_ID_PATTERN } from "./module-store.js";

/** Domain separation: a MAC made for anything else with the same key never verifies as a record. */
const RECORD_MAC_DOMAIN = "sandboxd remote-cache record v1";
/** First word of a stored record; another format (an older or newer sandboxd) is a miss, not an error. */
const RECORD_FORMAT = "sandboxd-rc1";
/** Hex characters of the key id a record names its signing key by (a SHA-256 prefix, not secret). */
const KEY_ID_HEX_CHARS = 16;

/** What the record says about one module id (a compiled module or a cached compile failure). */
export interface RemoteRecord {
  readonly moduleId: string;
  /** False for a cached compile failure: no module, only its diagnostics in `meta`. */
  readonly ok: boolean;
  /** Lowercase hex SHA-256 of the module bytes (of nothing for a failure). */
  readonly wasmSha256: string;
  readonly wasmBytes: number;
  /** Fingerprint of the toolchain that built it (rustc -vV, target, flags, SDK). */
  readonly toolchain: string;
  /** The compiler's metadata (diagnostics, fixed source, provenance), base64. */
  readonly meta: string;
  readonly createdUnixMs: number;
}

/** One cluster key: the secret and the public id records name it by. */
export interface ClusterKey {
  readonly id: string;
  readonly secret: Buffer;
}

/** The cluster's keys: the first signs, every one verifies (so a key can be rotated in without a flag day). */
export interface ClusterKeys {
  readonly signing: ClusterKey;
  readonly all: readonly ClusterKey[];
}

/** Builds keys from secrets (first one signs); an Error when there is none or one is too short to be a key. */
export function clusterKeys(secrets: readonly Buffer[]): ClusterKeys | Error {
  if (secrets.length === 0) return new Error("no key in the file");
  const all: ClusterKey[] = [];
  for (const [i, secret] of secrets.entries()) {
    if (secret.byteLength < REMOTE_CACHE_MIN_KEY_BYTES) {
      return new Error(
        `key ${i + 1} has ${secret.byteLength} bytes; a cluster key needs at least ${REMOTE_CACHE_MIN_KEY_BYTES} (e.g. openssl rand -hex 32)`,
      );
    }
    all.push({ id: createHash("sha256").update(secret).digest("hex").slice(0, KEY_ID_HEX_CHARS), secret });
  }
  return { signing: all[0]!, all };
}

/**
 * Reads `--remote-cache-key FILE`: one key per line (blank lines and `#` comments skipped), the
 * first signing, all verifying. Each key is the line's bytes, so `openssl rand -hex 32` makes one.
 */
export async function loadClusterKeys(file: string): Promise<ClusterKeys | Error> {
  let text: string;
  try {
    const raw = await readFile(file);
    if (raw.byteLength > REMOTE_CACHE_MAX_KEY_FILE_BYTES)
      return new Error(`${file} is over ${REMOTE_CACHE_MAX_KEY_FILE_BYTES} bytes; it should hold a few keys`);
    text = raw.toString("utf8");
  } catch (e: unknown) {
    return new Error(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const secrets = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => Buffer.from(line, "utf8"));
  const keys = clusterKeys(secrets);
  return keys instanceof Error ? new Error(`${file}: ${keys.message}`) : keys;
}

/** HMAC-SHA256 over the domain tag, the module id and the record's bytes, each length-prefixed. */
function recordMac(key: ClusterKey, moduleId: string, recordJson: Buffer): Buffer {
  const mac = createHmac("sha256", key.secret);
  for (const part of [Buffer.from(RECORD_MAC_DOMAIN), Buffer.from(moduleId), recordJson]) {
    mac.update(`${part.byteLength}:`);
    mac.update(part);
  }
  return mac.digest();
}

/** The stored form of a record: `sandboxd-rc1 <key id> <mac hex> <record json>`. */
export function sealRecord(keys: ClusterKeys, record: RemoteRecord): Buffer {
  const json = Buffer.from(JSON.stringify(record));
  const mac = recordMac(keys.signing, record.moduleId, json);
  return Buffer.concat([Buffer.from(`${RECORD_FORMAT} ${keys.signing.id} ${mac.toString("hex")} `), json]);
}

/**
 * The record stored for `moduleId`, once its MAC verifies under a cluster key for this id and its
 * fields are well-formed; otherwise an Error saying why (logged and counted by the caller).
 */
export function openRecord(keys: ClusterKeys, moduleId: string, stored: Buffer): RemoteRecord | Error {
  const header = /^(\S+) ([0-9a-f]+) ([0-9a-f]{64}) /.exec(stored.subarray(0, 128).toString("latin1"));
  if (!header || header[1] !== RECORD_FORMAT) return new Error("not a sandboxd-rc1 record");
  const key = keys.all.find((k) => k.id === header[2]);
  if (!key) return new Error(`signed with key ${header[2]}, which this host does not hold`);
  const json = stored.subarray(header[0].length);
  const expected = recordMac(key, moduleId, json);
  if (!timingSafeEqual(expected, Buffer.from(header[3]!, "hex")))
    return new Error("its MAC does not verify for this module id (altered, or replayed from another id)");
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString("utf8"));
  } catch {
    return new Error("its body is not JSON");
  }
  const r = (parsed ?? {}) as Record<string, unknown>;
  const wellFormed =
    r["moduleId"] === moduleId &&
    typeof r["ok"] === "boolean" &&
    typeof r["wasmSha256"] === "string" &&
    MODULE_ID_PATTERN.test(r["wasmSha256"]) &&
    Number.isSafeInteger(r["wasmBytes"]) &&
    (r["wasmBytes"] as number) >= 0 &&
    typeof r["toolchain"] === "string" &&
    typeof r["meta"] === "string" &&
    Number.isSafeInteger(r["createdUnixMs"]);
  if (!wellFormed) return new Error("its fields are malformed");
  return parsed as RemoteRecord;
}

/** Lowercase hex SHA-256 of some bytes. */
export function sha256Of(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
