import { sign, type KeyObject } from "node:crypto";
import { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import type { ParseResult } from "./policy-json.js";
import type { SignedPolicyInput } from "./verify-signature.js";

/**
 * The signed policy file `sandboxctl policy sign` writes: the proto3 JSON form of
 * sandbox.v1.SignedPolicy, so any client can parse it with its protobuf library's
 * JSON support (or by hand) and send it as ExecuteRequest.policy unchanged.
 */
export interface SignedPolicyFile {
  /** Base64 of the serialized Policy bytes exactly as signed. */
  policy: string;
  /** Name of the signing key (the daemon looks for <keyId>.pub). */
  keyId: string;
  /** Base64 of the Ed25519 signature over the policy bytes. */
  signature: string;
}

/** Serializes `policy` and signs those bytes with an Ed25519 private key. */
export function signPolicy(policy: Policy, privateKey: KeyObject, keyId: string): SignedPolicyInput {
  const bytes = Policy.encode(policy).finish();
  return { policy: bytes, keyId, signature: sign(null, bytes, privateKey) };
}

/** Renders a signed policy as the documented JSON file (pretty-printed, trailing newline). */
export function formatSignedPolicyFile(signed: SignedPolicyInput): string {
  const file: SignedPolicyFile = {
    policy: Buffer.from(signed.policy).toString("base64"),
    keyId: signed.keyId,
    signature: Buffer.from(signed.signature).toString("base64"),
  };
  return JSON.stringify(file, null, 2) + "\n";
}

/** Standard or URL-safe base64, with or without padding (proto3 JSON parsers accept both). */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Parses the documented JSON file; `keyId` may also be spelled `key_id`. */
export function parseSignedPolicyFile(text: string): ParseResult<SignedPolicyInput> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e: unknown) {
    return { ok: false, error: `not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return { ok: false, error: "signed policy file must be a JSON object" };
  const obj = value as Record<string, unknown>;
  const keyId = obj["keyId"] ?? obj["key_id"];
  const policy = obj["policy"];
  const signature = obj["signature"];
  if (typeof keyId !== "string" || keyId === "") return { ok: false, error: "signed policy file needs a non-empty string keyId" };
  if (typeof policy !== "string" || !BASE64.test(policy)) return { ok: false, error: "signed policy file needs policy as a base64 string" };
  if (typeof signature !== "string" || !BASE64.test(signature))
    return { ok: false, error: "signed policy file needs signature as a base64 string" };
  return {
    ok: true,
    value: { policy: new Uint8Array(Buffer.from(policy, "base64")), keyId, signature: new Uint8Array(Buffer.from(signature, "base64")) },
  };
}
