import { verify } from "node:crypto";
import { SandboxError } from "../errors/sandbox-error.js";
import { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { findUnknownField, KNOWN_POLICY_FIELDS, type UnknownField } from "./policy-fields.js";
import type { TrustedKeys } from "./trusted-keys.js";

/** What a client sends as sandbox.v1.SignedPolicy: the policy bytes exactly as signed, the key name, the signature. */
export interface SignedPolicyInput {
  readonly policy: Uint8Array;
  readonly keyId: string;
  readonly signature: Uint8Array;
}

/**
 * Check 2: the key is trusted, the Ed25519 signature verifies over the exact bytes
 * received, and those same bytes decode as a Policy with no field this daemon
 * does not know (it could be a restriction the daemon would fail to enforce). The bytes are never
 * re-serialized before verifying: two encoders may disagree on field order or
 * defaults, and the signature only vouches for what the signer produced.
 */
export function verifySignedPolicy(signed: SignedPolicyInput, keys: TrustedKeys): Policy {
  const key = keys.get(signed.keyId);
  if (key === undefined) {
    throw new SandboxError("POLICY_UNKNOWN_KEY", `policy key_id "${signed.keyId}" names no trusted key`, {
      metadata: { key_id: signed.keyId },
    });
  }
  let valid: boolean;
  try {
    valid = verify(null, signed.policy, key, signed.signature);
  } catch (e: unknown) {
    // node throws rather than returning false for some malformed signatures; both mean "not signed by this key".
    throw new SandboxError("POLICY_BAD_SIGNATURE", `policy signature does not verify with key "${signed.keyId}"`, {
      cause: e,
      metadata: { key_id: signed.keyId },
    });
  }
  if (!valid) {
    throw new SandboxError("POLICY_BAD_SIGNATURE", `policy signature does not verify with key "${signed.keyId}"`, {
      metadata: { key_id: signed.keyId },
    });
  }
  let policy: Policy;
  let unknown: UnknownField | undefined;
  try {
    policy = Policy.decode(signed.policy);
    unknown = findUnknownField(signed.policy, KNOWN_POLICY_FIELDS);
  } catch (e: unknown) {
    throw new SandboxError("POLICY_MALFORMED", `signed policy bytes do not decode as a Policy: ${e instanceof Error ? e.message : String(e)}`, {
      cause: e,
      metadata: { key_id: signed.keyId },
    });
  }
  if (unknown) {
    throw new SandboxError("POLICY_MALFORMED", `signed policy refused: ${unknown.message}; a policy field this daemon cannot enforce is refused, not ignored`, {
      metadata: { key_id: signed.keyId, field_number: String(unknown.fieldNumber), message: unknown.path },
    });
  }
  return policy;
}
