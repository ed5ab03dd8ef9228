/**
 * `sandboxctl receipt verify`: checks a receipt a daemon signed (docs/receipts.md) with the daemon's
 * public key, and prints what it records. A thin adapter over src/receipt/receipt.ts.
 */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Receipt, SignedReceipt } from "../gen/pb/sandbox/v1/sandbox.js";
import { verifyReceipt } from "../receipt/receipt.js";
import { UsageError } from "./usage-error.js";

/** The receipt lines of sandboxctl's --help. */
export const RECEIPT_USAGE = `  sandboxctl receipt verify --key PUB FILE
      checks FILE's signature with the daemon's receipt public key (PEM SPKI) and prints the receipt as JSON;
      FILE is a SignedReceipt in proto3 JSON ({"receipt","keyId","signature"}), or an ExecuteResponse holding one`;

/** Exit status when the receipt does not verify. */
const EXIT_FAILED = 1;

/** Runs `sandboxctl receipt ...` (args after "receipt"); returns the exit status. */
export async function receiptCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "verify") throw new UsageError(sub === undefined ? "receipt needs a command: verify" : `unknown receipt command: ${sub}`);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { key: { type: "string" } }, allowPositionals: true, strict: true });
  } catch (e: unknown) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const keyFile = parsed.values.key;
  if (keyFile === undefined || keyFile === "") throw new UsageError("--key is required");
  if (parsed.positionals.length !== 1) throw new UsageError("expected exactly one receipt FILE argument");
  const file = parsed.positionals[0] as string;
  const signed = parseReceiptFile(await readFile(file, "utf8"));
  if (typeof signed === "string") return failed(`${file}: ${signed}`);
  const check = verifyReceipt(signed, await readFile(keyFile, "utf8"));
  if (!check.ok) return failed(`${file}: ${check.error}`);
  process.stdout.write(JSON.stringify(Receipt.toJSON(check.receipt), null, 2) + "\n");
  process.stderr.write(`OK: signed by "${signed.keyId}"\n`);
  return 0;
}

/** A SignedReceipt from its proto3 JSON, or from an ExecuteResponse's; an error sentence otherwise. */
export function parseReceiptFile(text: string): SignedReceipt | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e: unknown) {
    return `not JSON: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "a receipt file must be a JSON object";
  const outer = value as Record<string, unknown>;
  // An ExecuteResponse (or a stream's `finished` event) carries the SignedReceipt in its `receipt` field.
  const inner = typeof outer["receipt"] === "object" && outer["receipt"] !== null ? (outer["receipt"] as Record<string, unknown>) : outer;
  const receipt = inner["receipt"];
  const signature = inner["signature"];
  const keyId = inner["keyId"] ?? inner["key_id"];
  if (typeof receipt !== "string" || receipt === "") return "no receipt: expected a base64 string `receipt`";
  if (typeof signature !== "string" || signature === "") return "no signature: expected a base64 string `signature`";
  return SignedReceipt.fromJSON({ receipt, signature, keyId: typeof keyId === "string" ? keyId : "" });
}

function failed(message: string): number {
  process.stderr.write(`sandboxctl: ${message}\n`);
  return EXIT_FAILED;
}
