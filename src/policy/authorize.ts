import { createHash } from "node:crypto";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { resolveMounts, type EffectiveMount } from "./mounts.js";
import type { TrustedKeys } from "./trusted-keys.js";
import { checkValidity } from "./validity.js";
import { verifySignedPolicy, type SignedPolicyInput } from "./verify-signature.js";

export type { EffectiveMount } from "./mounts.js";
export type { SignedPolicyInput } from "./verify-signature.js";

/** The operator's hard limits: a policy asking for more is refused, never clamped. */
export interface PolicyCeilings {
  /** Largest memory_limit_bytes a policy may grant. */
  maxMemoryBytes: number;
  /** Largest timeout_ms a policy may grant. */
  maxTimeoutMs: number;
  /** Largest max_output_bytes a policy may grant. */
  maxOutputBytes: number;
  /** Largest max_write_bytes a policy may grant. */
  maxWriteBytes: number;
  /** Largest fuel_limit a policy may grant, in fuel units. */
  maxFuel: number;
  /** Host directories under which mounts may lie (checked after resolving symlinks). Empty = no mounts at all. */
  allowedRoots: readonly string[];
}

/** What a run gets where the policy says 0 ("daemon default"), and what an unsigned run gets. */
export interface PolicyDefaults {
  /** Guest memory when the policy leaves it at 0. */
  memoryLimitBytes: number;
  /** Wall-clock timeout when the policy leaves it at 0. */
  timeoutMs: number;
  /** Output cap (stdout and stderr each) when the policy leaves it at 0. */
  maxOutputBytes: number;
  /** Bytes a run may add to its writable mounts when the policy leaves it at 0. */
  maxWriteBytes: number;
  /** Fuel limit when the policy leaves it at 0; 0 = none (the run is not metered). */
  fuelLimit: number;
}

/** Everything a run is allowed, after every check passed; the runtime enforces exactly this. */
export interface Grant {
  /** The policy's policy_id ("" for an unsigned run), for logs and audit. */
  policyId: string;
  /** Module the policy is bound to; "" = any module (see bindToModule). */
  boundModuleId: string;
  /** Directories to expose, host paths already resolved and checked. */
  mounts: EffectiveMount[];
  /** Guest memory limit in bytes. */
  memoryLimitBytes: number;
  /** Wall-clock timeout in milliseconds. */
  timeoutMs: number;
  /** Output cap in bytes, stdout and stderr each. */
  maxOutputBytes: number;
  /** Bytes the run may add to its writable mounts. */
  maxWriteBytes: number;
  /** Fuel the run may consume; 0 = no limit, and the run is not metered. */
  fuelLimit: number;
  /** SHA-256 of the exact signed policy bytes, and the key that signed them; undefined for an unsigned run. */
  signedBy: { readonly policySha256: Uint8Array; readonly keyId: string } | undefined;
  /** Whether the policy grants network access (always false for now: such policies are refused). */
  network: boolean;
}

/** What authorize needs from the daemon: trusted keys, operator settings, and the current time. */
export interface AuthorizeContext {
  /** Keys a policy may be signed with. */
  keys: TrustedKeys;
  /** --allow-unsigned: a request without a policy runs with defaults, no mounts, no network. */
  allowUnsigned: boolean;
  /** Operator ceilings (check 5) and allowed mount roots (check 6). */
  ceilings: PolicyCeilings;
  /** Limits applied where the policy says 0, and to unsigned runs. */
  defaults: PolicyDefaults;
  /** Current time in milliseconds since the epoch (a parameter so tests control the clock). */
  nowMs: number;
}

/**
 * Turns what the client sent into a Grant, running checks 1, 2, 3, 5 and 6 of the
 * policy issue in that order (check 4 needs the module id, which for a
 * compile-then-run request is known only after compiling: see bindToModule).
 * Throws a SandboxError with the catalogued reason on the first failure.
 * A SignedPolicy with every field empty counts as no policy: some protobuf
 * clients always send the sub-message.
 */
export async function authorize(signed: SignedPolicyInput | undefined, ctx: AuthorizeContext): Promise<Grant> {
  if (signed === undefined || isEmpty(signed)) {
    if (!ctx.allowUnsigned) {
      throw new SandboxError("POLICY_REQUIRED", "this daemon runs only requests that carry a signed policy");
    }
    return {
      policyId: "",
      boundModuleId: "",
      mounts: [],
      memoryLimitBytes: ctx.defaults.memoryLimitBytes,
      timeoutMs: ctx.defaults.timeoutMs,
      maxOutputBytes: ctx.defaults.maxOutputBytes,
      maxWriteBytes: ctx.defaults.maxWriteBytes,
      fuelLimit: ctx.defaults.fuelLimit,
      signedBy: undefined,
      network: false,
    };
  }
  const policy = verifySignedPolicy(signed, ctx.keys);
  checkValidity(policy, ctx.nowMs);
  checkCeilings(policy, ctx.ceilings);
  checkSupported(policy);
  const mounts = await resolveMounts(policy.mounts, ctx.ceilings.allowedRoots);
  return {
    policyId: policy.policyId,
    boundModuleId: policy.moduleId,
    mounts,
    memoryLimitBytes: policy.memoryLimitBytes === 0 ? ctx.defaults.memoryLimitBytes : policy.memoryLimitBytes,
    timeoutMs: policy.timeoutMs === 0 ? ctx.defaults.timeoutMs : policy.timeoutMs,
    maxOutputBytes: policy.maxOutputBytes === 0 ? ctx.defaults.maxOutputBytes : policy.maxOutputBytes,
    maxWriteBytes: policy.maxWriteBytes === 0 ? ctx.defaults.maxWriteBytes : policy.maxWriteBytes,
    fuelLimit: policy.fuelLimit === 0 ? ctx.defaults.fuelLimit : policy.fuelLimit,
    signedBy: { policySha256: createHash("sha256").update(signed.policy).digest(), keyId: signed.keyId },
    network: policy.network,
  };
}

/** Check 4: throws POLICY_MODULE_MISMATCH if the grant is bound to a module other than `moduleId`. */
export function bindToModule(grant: Grant, moduleId: string): void {
  if (grant.boundModuleId !== "" && grant.boundModuleId !== moduleId) {
    throw new SandboxError(
      "POLICY_MODULE_MISMATCH",
      `policy "${grant.policyId}" is bound to module ${grant.boundModuleId}, not ${moduleId}`,
      { metadata: { policy_id: grant.policyId, policy_module_id: grant.boundModuleId, module_id: moduleId } },
    );
  }
}

/** Check 5: each explicit limit is within the operator's ceiling (0 = daemon default, always allowed). */
function checkCeilings(policy: Policy, ceilings: PolicyCeilings): void {
  const limits: Array<[field: string, requested: number, ceiling: number]> = [
    ["memory_limit_bytes", policy.memoryLimitBytes, ceilings.maxMemoryBytes],
    ["timeout_ms", policy.timeoutMs, ceilings.maxTimeoutMs],
    ["max_output_bytes", policy.maxOutputBytes, ceilings.maxOutputBytes],
    ["max_write_bytes", policy.maxWriteBytes, ceilings.maxWriteBytes],
    ["fuel_limit", policy.fuelLimit, ceilings.maxFuel],
  ];
  for (const [field, requested, ceiling] of limits) {
    if (requested > ceiling) {
      throw new SandboxError(
        "POLICY_CEILING_EXCEEDED",
        `policy "${policy.policyId}" asks for ${field}=${requested}, above the operator's ceiling of ${ceiling}`,
        { metadata: { policy_id: policy.policyId, field, requested: String(requested), ceiling: String(ceiling) } },
      );
    }
  }
}

/**
 * A grant this daemon cannot honour is refused, never silently dropped: the
 * signer meant the script to have it. Nothing provides or confines network
 * access yet (WASI preview1 has no sockets of its own).
 */
function checkSupported(policy: Policy): void {
  if (policy.network) {
    throw new SandboxError(
      "UNSUPPORTED",
      `policy "${policy.policyId}" grants network access, which this daemon does not implement yet; sign it with network=false`,
      { metadata: { policy_id: policy.policyId, field: "network" } },
    );
  }
}

function isEmpty(signed: SignedPolicyInput): boolean {
  return signed.policy.length === 0 && signed.keyId === "" && signed.signature.length === 0;
}
