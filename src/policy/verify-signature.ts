import { verify } from "node:crypto";
import { SandboxError } from "../errors/sandbox-error.js";
import { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { findUnknownField, KNOWN_POLICY_FIELDS, type UnknownField } from "./policy-fields.js";
import { MAX_POLICY_BYTES, MAX_POLICY_MOUNTS } from "../limits.js";
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
  // Before verifying: hashing the bytes for the signature is the first cost a stranger could impose.
  checkPolicyBytes(signed.policy, signed.keyId);
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
    throw new SandboxError(
      "POLICY_MALFORMED",
      `signed policy bytes do not decode as a Policy: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
        metadata: { key_id: signed.keyId },
      },
    );
  }
  if (unknown) {
    throw new SandboxError(
      "POLICY_MALFORMED",
      `signed policy refused: ${unknown.message}; a policy field this daemon cannot enforce is refused, not ignored`,
      {
        metadata: { key_id: signed.keyId, field_number: String(unknown.fieldNumber), message: unknown.path },
      },
    );
  }
  checkMountCount(policy);
  return policy;
}

/** POLICY_TOO_LARGE if serialized policy bytes exceed MAX_POLICY_BYTES. */
export function checkPolicyBytes(policy: Uint8Array, keyId: string): void {
  if (policy.byteLength > MAX_POLICY_BYTES) {
    throw new SandboxError("POLICY_TOO_LARGE", `the signed policy is ${policy.byteLength} bytes; the limit is ${MAX_POLICY_BYTES}`, {
      metadata: { key_id: keyId, limit: "bytes", max: String(MAX_POLICY_BYTES) },
    });
  }
}

/** POLICY_TOO_LARGE if a policy lists more than MAX_POLICY_MOUNTS mounts. */
export function checkMountCount(policy: Policy): void {
  // Each mount costs a realpath and a comparison with every other: a signer cannot ask for thousands.
  if (policy.mounts.length > MAX_POLICY_MOUNTS) {
    throw new SandboxError(
      "POLICY_TOO_LARGE",
      `policy "${policy.policyId}" has ${policy.mounts.length} mounts; the limit is ${MAX_POLICY_MOUNTS}`,
      {
        metadata: { policy_id: policy.policyId, limit: "mounts", max: String(MAX_POLICY_MOUNTS) },
      },
    );
  }
}
