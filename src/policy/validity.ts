import { SandboxError } from "../errors/sandbox-error.js";
import type { Policy } from "../gen/pb/sandbox/v1/sandbox.js";
import { POLICY_CLOCK_SKEW_SECONDS } from "../limits.js";

/**
 * Check 3: the policy is inside its validity window at `nowMs`, give or take
 * POLICY_CLOCK_SKEW_SECONDS (signer and daemon clocks never agree exactly).
 * expires_at_unix is required: a policy that never expires cannot be revoked
 * short of rotating the key that signed it.
 */
export function checkValidity(policy: Policy, nowMs: number): void {
  const nowUnix = Math.floor(nowMs / 1000);
  const metadata = { policy_id: policy.policyId };
  if (policy.notBeforeUnix > nowUnix + POLICY_CLOCK_SKEW_SECONDS) {
    throw new SandboxError(
      "POLICY_NOT_YET_VALID",
      `policy "${policy.policyId}" is not valid before ${isoTime(policy.notBeforeUnix)} (now ${isoTime(nowUnix)})`,
      { metadata: { ...metadata, not_before_unix: String(policy.notBeforeUnix) } },
    );
  }
  if (policy.expiresAtUnix === 0) {
    throw new SandboxError("POLICY_EXPIRED", `policy "${policy.policyId}" has no expires_at_unix; an expiry is required`, { metadata });
  }
  if (policy.expiresAtUnix < nowUnix - POLICY_CLOCK_SKEW_SECONDS) {
    throw new SandboxError(
      "POLICY_EXPIRED",
      `policy "${policy.policyId}" expired at ${isoTime(policy.expiresAtUnix)} (now ${isoTime(nowUnix)})`,
      { metadata: { ...metadata, expires_at_unix: String(policy.expiresAtUnix) } },
    );
  }
  // Both bounds could pass within the skew allowance while the window itself is empty.
  if (policy.notBeforeUnix !== 0 && policy.expiresAtUnix <= policy.notBeforeUnix) {
    throw new SandboxError(
      "POLICY_EXPIRED",
      `policy "${policy.policyId}" expires (${isoTime(policy.expiresAtUnix)}) before it becomes valid (${isoTime(policy.notBeforeUnix)})`,
      { metadata: { ...metadata, expires_at_unix: String(policy.expiresAtUnix) } },
    );
  }
}

function isoTime(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  return Number.isNaN(d.getTime()) ? `${unixSeconds} (unix seconds)` : d.toISOString();
}
