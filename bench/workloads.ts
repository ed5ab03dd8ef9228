/**
 * What the benchmarks feed the daemon: the Rust fixtures in bench/fixtures/, and
 * a signed policy (made with the real sandboxctl) for runs that need more than
 * the unsigned defaults, such as 100 MB of output.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { SignedPolicy } from "../src/gen/pb/sandbox/v1/sandbox.js";
import { REPO_ROOT } from "./rustc-baseline.js";

const run = promisify(execFile);

/** The compiled policy tool (dist/src/cli/sandboxctl.js). */
const SANDBOXCTL_BIN = fileURLToPath(new URL("../src/cli/sandboxctl.js", import.meta.url));
/** Key id of the throwaway authority the bench signs its policy with. */
const BENCH_KEY_ID = "bench";
/** How long the bench's policy stays valid; a full run takes ~5 minutes. */
const POLICY_LIFETIME_S = 3600;

/** Source of bench/fixtures/<name>.rs (read from the repo, not from dist/). */
export async function fixtureSource(name: string): Promise<string> {
  return readFile(path.join(REPO_ROOT, "bench", "fixtures", `${name}.rs`), "utf8");
}

/** The same source made unique, so the daemon's content-addressed cache cannot hit (a cold compile). */
export function uniqueSource(source: string, tag: string): string {
  return `${source}\n// bench cold-compile ${tag}\n`;
}

/** A signed policy and the directory of trusted public keys the daemon must load to accept it. */
export interface BenchPolicy {
  readonly trustedKeysDir: string;
  readonly policy: SignedPolicy;
  /** The timeout alone, for Execute (the output cap of `policy` is too large for one response). */
  readonly cpuPolicy: SignedPolicy;
  /** cpuPolicy plus a fuel limit no bench run reaches: the run is metered. */
  readonly fuelPolicy: SignedPolicy;
}

/** The fuel limit of the bench's metered policy: far above what any fixture consumes. */
export const BENCH_FUEL_LIMIT = 10 ** 15;

/** Limits of the policy, in proto3 JSON as sandboxctl reads it. */
export interface BenchPolicyLimits {
  readonly maxOutputBytes?: number;
  readonly timeoutMs?: number;
  readonly memoryLimitBytes?: number;
}

/**
 * Generates a key with `sandboxctl keygen` in `dir`, signs a policy with the given
 * limits with `sandboxctl policy sign`, and trusts the public key in `dir/trusted`.
 */
export async function makeSignedPolicy(dir: string, streamLimits: BenchPolicyLimits): Promise<BenchPolicy> {
  const keysDir = path.join(dir, "authority");
  const trustedKeysDir = path.join(dir, "trusted");
  await mkdir(trustedKeysDir, { recursive: true });
  await run(process.execPath, [SANDBOXCTL_BIN, "keygen", "--id", BENCH_KEY_ID, "--out", keysDir]);
  // The private key stays out of the daemon's key dir: the daemon refuses (and warns about) private keys there.
  await copyFile(path.join(keysDir, `${BENCH_KEY_ID}.pub`), path.join(trustedKeysDir, `${BENCH_KEY_ID}.pub`));
  const sign = async (name: string, limits: BenchPolicyLimits, fuelLimit: number | undefined): Promise<SignedPolicy> => {
    const policyJson = path.join(dir, name);
    await writeFile(
      policyJson,
      JSON.stringify({
        policy_id: "sandboxd-bench",
        ...(limits.maxOutputBytes ? { max_output_bytes: limits.maxOutputBytes } : {}),
        ...(limits.timeoutMs ? { timeout_ms: limits.timeoutMs } : {}),
        ...(limits.memoryLimitBytes ? { memory_limit_bytes: limits.memoryLimitBytes } : {}),
        ...(fuelLimit ? { fuel_limit: fuelLimit } : {}),
      }),
    );
    const { stdout } = await run(process.execPath, [
      SANDBOXCTL_BIN,
      "policy",
      "sign",
      "--key",
      path.join(keysDir, `${BENCH_KEY_ID}.key`),
      "--id",
      BENCH_KEY_ID,
      "--expires-in",
      String(POLICY_LIFETIME_S),
      policyJson,
    ]);
    const signed = JSON.parse(stdout) as { policy: string; keyId: string; signature: string };
    return { policy: Buffer.from(signed.policy, "base64"), keyId: signed.keyId, signature: Buffer.from(signed.signature, "base64") };
  };
  const execute: BenchPolicyLimits = streamLimits.timeoutMs ? { timeoutMs: streamLimits.timeoutMs } : {};
  return {
    trustedKeysDir,
    policy: await sign("policy.json", streamLimits, undefined),
    cpuPolicy: await sign("cpu-policy.json", execute, undefined),
    fuelPolicy: await sign("fuel-policy.json", execute, BENCH_FUEL_LIMIT),
  };
}
