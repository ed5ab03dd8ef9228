import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import type { Reason } from "../../src/errors/reasons.js";
import { Policy } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { signPolicy } from "../../src/policy/signed-policy-file.js";
import type { SignedPolicyInput } from "../../src/policy/verify-signature.js";

/** An Ed25519 key pair for tests, with its public key in PEM SPKI form. */
export interface TestKey {
  id: string;
  privateKey: KeyObject;
  publicPem: string;
}

/** Generates a fresh Ed25519 key pair named `id`. */
export function makeKey(id: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { id, privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

/** Writes `<dir>/<id>.pub` for each key. */
export async function writePublicKeys(dir: string, keys: readonly TestKey[]): Promise<void> {
  for (const key of keys) await writeFile(join(dir, `${key.id}.pub`), key.publicPem);
}

/** Signs a policy (fields not given keep their proto defaults) with `key`, under `keyId` (default: the key's own id). */
export function signed(policy: Partial<Policy>, key: TestKey, keyId = key.id): SignedPolicyInput {
  return signPolicy(Policy.fromPartial(policy), key.privateKey, keyId);
}

/** A signed policy as the generated gRPC client's SignedPolicy (Buffers, not Uint8Arrays). */
export function wire(s: SignedPolicyInput): { policy: Buffer; keyId: string; signature: Buffer } {
  return { policy: Buffer.from(s.policy), keyId: s.keyId, signature: Buffer.from(s.signature) };
}

/** A mkdtemp directory under the OS temp dir, and its removal. */
export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `sandboxd-${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Awaits `promise` (or runs `fn`), asserts it failed with a SandboxError of `reason`, and returns that error. */
export async function expectRefused(action: Promise<unknown> | (() => unknown), reason: Reason): Promise<SandboxError> {
  try {
    await (typeof action === "function" ? action() : action);
  } catch (e: unknown) {
    expect(e, String(e)).to.be.instanceOf(SandboxError);
    const err = e as SandboxError;
    expect(err.reason, err.message).to.equal(reason);
    return err;
  }
  expect.fail(`expected refusal with ${reason}, but it succeeded`);
}
