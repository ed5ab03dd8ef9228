/**
 * Signed receipts: a serialized sandbox.v1.Receipt saying what ran, under which policy, on which
 * input and with which result, signed as-is with the daemon's Ed25519 key. The bytes that were
 * signed travel with the signature, so a verifier never re-encodes anything: it checks the
 * signature over exactly those bytes, then decodes them. Digests are SHA-256 throughout.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type Hash, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { Outcome, Receipt, SignedReceipt } from "../gen/pb/sandbox/v1/sandbox.js";
import type { Outcome as CoreOutcome } from "../runtime/execution.js";

/** File name suffix of a receipt key; the key id is the name without it. */
export const RECEIPT_KEY_SUFFIX = ".key";

/** The proto Outcome of each core outcome: what responses carry and receipts record. */
export const PROTO_OUTCOMES: Readonly<Record<CoreOutcome | "compile_error", Outcome>> = {
  exited: Outcome.OUTCOME_EXITED,
  trap: Outcome.OUTCOME_TRAP,
  timeout: Outcome.OUTCOME_TIMEOUT,
  memory_limit: Outcome.OUTCOME_MEMORY_LIMIT,
  output_limit: Outcome.OUTCOME_OUTPUT_LIMIT,
  cancelled: Outcome.OUTCOME_CANCELLED,
  fuel_exhausted: Outcome.OUTCOME_FUEL_EXHAUSTED,
  compile_error: Outcome.OUTCOME_COMPILE_ERROR,
};

/** SHA-256 of some bytes. */
export function sha256(bytes: Uint8Array): Uint8Array {
  return createHash("sha256").update(bytes).digest();
}

function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * SHA-256 of args and env in their canonical encoding (docs/receipts.md): the number of args, then
 * each arg; the number of variables, then each key and value, ordered by the key's UTF-8 bytes. A
 * count or length is 4 bytes big-endian; a string is its UTF-8 length then its bytes.
 */
export function argsEnvSha256(args: readonly string[], env: ReadonlyMap<string, string>): Uint8Array {
  const hash = createHash("sha256");
  const str = (s: string): void => {
    const bytes = Buffer.from(s, "utf8");
    hash.update(u32be(bytes.length)).update(bytes);
  };
  hash.update(u32be(args.length));
  for (const arg of args) str(arg);
  const entries = [...env].map(([k, v]) => [Buffer.from(k, "utf8"), v] as const).sort((a, b) => Buffer.compare(a[0], b[0]));
  hash.update(u32be(entries.length));
  for (const [key, value] of entries) {
    hash.update(u32be(key.length)).update(key);
    str(value);
  }
  return hash.digest();
}

/** A running SHA-256 of a stream of output chunks. */
export class OutputDigest {
  private readonly hash: Hash = createHash("sha256");

  /** Adds a chunk, in the order the guest wrote it. */
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  /** The digest of everything added (call once). */
  digest(): Uint8Array {
    return this.hash.digest();
  }
}

/** Signs receipts with the daemon's key. */
export class ReceiptSigner {
  private constructor(
    private readonly key: KeyObject,
    /** The key's id: its file name without `.key`. */
    readonly keyId: string,
  ) {}

  /** Reads an Ed25519 private key (PEM PKCS#8); throws an Error saying what is wrong with the file. */
  static async load(file: string): Promise<ReceiptSigner> {
    let pem: string;
    try {
      pem = await readFile(file, "utf8");
    } catch (e: unknown) {
      throw new Error(`cannot read the receipt key ${file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: "pem" });
    } catch (e: unknown) {
      throw new Error(`the receipt key ${file} is not a PEM private key`, { cause: e });
    }
    if (key.asymmetricKeyType !== "ed25519")
      throw new Error(`the receipt key ${file} is a ${key.asymmetricKeyType ?? "symmetric"} key, not Ed25519`);
    const name = basename(file);
    return new ReceiptSigner(key, name.endsWith(RECEIPT_KEY_SUFFIX) ? name.slice(0, -RECEIPT_KEY_SUFFIX.length) : name);
  }

  /** Serializes the receipt and signs exactly those bytes. */
  sign(receipt: Receipt): SignedReceipt {
    const bytes = Receipt.encode(receipt).finish();
    return { receipt: Buffer.from(bytes), keyId: this.keyId, signature: sign(null, bytes, this.key) };
  }
}

/** What verifying a receipt found: the decoded receipt, or why it does not verify. */
export type ReceiptCheck = { ok: true; receipt: Receipt } | { ok: false; error: string };

/** Checks a signed receipt's signature with an Ed25519 public key (PEM SPKI), then decodes it. */
export function verifyReceipt(signed: SignedReceipt, publicKeyPem: string): ReceiptCheck {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicKeyPem, format: "pem" });
  } catch (e: unknown) {
    return { ok: false, error: `not a PEM public key: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (key.asymmetricKeyType !== "ed25519") return { ok: false, error: `the key is ${key.asymmetricKeyType ?? "symmetric"}, not Ed25519` };
  if (!verify(null, signed.receipt, key, signed.signature))
    return { ok: false, error: "the signature does not verify over the receipt bytes with this key" };
  try {
    return { ok: true, receipt: Receipt.decode(signed.receipt) };
  } catch (e: unknown) {
    return { ok: false, error: `the signed bytes do not decode as a Receipt: ${e instanceof Error ? e.message : String(e)}` };
  }
}
