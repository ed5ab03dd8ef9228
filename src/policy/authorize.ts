import { createHash } from "node:crypto";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { MAX_ALLOWED_HOSTS } from "../limits.js";
import { parseHostPattern, patternCovers, type HostPattern } from "./host-patterns.js";
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
  /** Largest max_http_requests a policy may grant. */
  maxHttpRequests: number;
  /** Largest max_http_response_bytes a policy may grant. */
  maxHttpResponseBytes: number;
  /** Largest http_timeout_ms a policy may grant. */
  maxHttpTimeoutMs: number;
  /** Destinations allowed_hosts entries must lie within (--allow-network-host). Empty = no network at all. */
  networkHosts: readonly HostPattern[];
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
  /** Outbound HTTP requests a run may make when the policy leaves it at 0. */
  maxHttpRequests: number;
  /** Response body bytes a run may receive when the policy leaves it at 0. */
  maxHttpResponseBytes: number;
  /** Wall-clock limit of one outbound request when the policy leaves it at 0. */
  httpTimeoutMs: number;
}

/** Outbound HTTP a run may make: where to, and how much. */
export interface NetworkGrant {
  /** The policy's allowed_hosts, parsed; each lies within the operator's --allow-network-host patterns. */
  readonly allowedHosts: readonly HostPattern[];
  /** Requests the run may make, redirect hops included. */
  readonly maxRequests: number;
  /** Response body bytes the run may receive over all its requests. */
  readonly maxResponseBytes: number;
  /** Wall-clock limit of one request, redirects included. */
  readonly requestTimeoutMs: number;
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
  /** Outbound HTTP the policy grants; undefined = none. */
  network: NetworkGrant | undefined;
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
      network: undefined,
    };
  }
  const policy = verifySignedPolicy(signed, ctx.keys);
  checkValidity(policy, ctx.nowMs);
  const allowedHosts = checkNetworkGrant(policy);
  checkCeilings(policy, ctx.ceilings);
  checkHostCeiling(policy, allowedHosts, ctx.ceilings.networkHosts);
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
    network: policy.network
      ? {
          allowedHosts,
          maxRequests: policy.maxHttpRequests === 0 ? ctx.defaults.maxHttpRequests : policy.maxHttpRequests,
          maxResponseBytes: policy.maxHttpResponseBytes === 0 ? ctx.defaults.maxHttpResponseBytes : policy.maxHttpResponseBytes,
          requestTimeoutMs: policy.httpTimeoutMs === 0 ? ctx.defaults.httpTimeoutMs : policy.httpTimeoutMs,
        }
      : undefined,
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
    ["max_http_requests", policy.maxHttpRequests, ceilings.maxHttpRequests],
    ["max_http_response_bytes", policy.maxHttpResponseBytes, ceilings.maxHttpResponseBytes],
    ["http_timeout_ms", policy.httpTimeoutMs, ceilings.maxHttpTimeoutMs],
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
 * Throws POLICY_MALFORMED unless `network` and allowed_hosts come together and every entry parses; returns them.
 * `network` is the master switch and allowed_hosts says where to: a policy with one and not the other
 * is self-contradictory (its author meant something it does not say), so it is refused rather than
 * read either way.
 */
export function checkNetworkGrant(policy: Policy): HostPattern[] {
  const malformed = (message: string): SandboxError =>
    new SandboxError("POLICY_MALFORMED", `policy "${policy.policyId}": ${message}`, {
      metadata: { policy_id: policy.policyId, field: "allowed_hosts" },
    });
  if (policy.network && policy.allowedHosts.length === 0) {
    throw malformed("network is true but allowed_hosts is empty: list the scheme://host[:port] the script may reach");
  }
  if (!policy.network && policy.allowedHosts.length > 0) {
    throw malformed("allowed_hosts is set but network is false: set network to true to grant outbound HTTP");
  }
  if (policy.allowedHosts.length > MAX_ALLOWED_HOSTS)
    throw malformed(`allowed_hosts has ${policy.allowedHosts.length} entries; at most ${MAX_ALLOWED_HOSTS} are allowed`);
  const parsed: HostPattern[] = [];
  for (const text of policy.allowedHosts) {
    const pattern = parseHostPattern(text);
    if (pattern instanceof Error) throw malformed(`allowed_hosts entry ${pattern.message}`);
    parsed.push(pattern);
  }
  return parsed;
}

/** Check 5 for destinations: every allowed_hosts entry lies within one of the operator's patterns. */
function checkHostCeiling(policy: Policy, entries: readonly HostPattern[], ceiling: readonly HostPattern[]): void {
  for (const entry of entries) {
    if (ceiling.some((c) => patternCovers(c, entry))) continue;
    const allowed =
      ceiling.length === 0
        ? "this daemon allows no outbound hosts (--allow-network-host)"
        : `the operator allows only ${ceiling.map((c) => c.text).join(", ")}`;
    throw new SandboxError(
      "POLICY_CEILING_EXCEEDED",
      `policy "${policy.policyId}" grants ${entry.text}, outside the operator's ceiling: ${allowed}`,
      {
        metadata: { policy_id: policy.policyId, field: "allowed_hosts", requested: entry.text },
      },
    );
  }
}

function isEmpty(signed: SignedPolicyInput): boolean {
  return signed.policy.length === 0 && signed.keyId === "" && signed.signature.length === 0;
}
