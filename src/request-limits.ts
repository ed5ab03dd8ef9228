/**
 * Caps on what one Execute may carry in its repeated and map fields. A request
 * under the message size limit can still hold tens of millions of tiny entries,
 * each of which costs far more once decoded (a V8 string, an array slot, a WASI
 * pointer) than on the wire; these caps bound that before any work is done.
 */
import { SandboxError } from "./errors/sandbox-error.js";
import { MAX_ARGS, MAX_ARGS_BYTES, MAX_ENV_BYTES, MAX_ENV_VARS } from "./limits.js";

/** The operator's caps on a request's `args` and `env`. */
export interface RequestLimits {
  /** Arguments after argv[0]. */
  readonly maxArgs: number;
  /** Total UTF-8 bytes of those arguments. */
  readonly maxArgsBytes: number;
  /** Environment variables. */
  readonly maxEnvVars: number;
  /** Total UTF-8 bytes of the environment's keys and values. */
  readonly maxEnvBytes: number;
}

/** The caps when the operator does not set them. */
export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxArgs: MAX_ARGS,
  maxArgsBytes: MAX_ARGS_BYTES,
  maxEnvVars: MAX_ENV_VARS,
  maxEnvBytes: MAX_ENV_BYTES,
};

/**
 * ARGS_TOO_LARGE if `count` arguments of `bytes` bytes in all exceed the caps.
 * Counts may be partial (a scan stops at the first excess), hence "more than".
 */
export function argsOverLimit(count: number, bytes: number, limits: RequestLimits): SandboxError | undefined {
  if (count > limits.maxArgs)
    return tooLarge("ARGS_TOO_LARGE", `args has more than ${limits.maxArgs} args`, "count", limits.maxArgs, "--max-args");
  if (bytes > limits.maxArgsBytes) {
    return tooLarge(
      "ARGS_TOO_LARGE",
      `args totals more than ${limits.maxArgsBytes} bytes`,
      "bytes",
      limits.maxArgsBytes,
      "--max-args-bytes",
    );
  }
  return undefined;
}

/** ENV_TOO_LARGE if `count` variables of `bytes` bytes in all (keys plus values) exceed the caps. */
export function envOverLimit(count: number, bytes: number, limits: RequestLimits): SandboxError | undefined {
  if (count > limits.maxEnvVars) {
    return tooLarge("ENV_TOO_LARGE", `env has more than ${limits.maxEnvVars} env vars`, "count", limits.maxEnvVars, "--max-env-vars");
  }
  if (bytes > limits.maxEnvBytes) {
    return tooLarge(
      "ENV_TOO_LARGE",
      `env totals more than ${limits.maxEnvBytes} bytes of keys and values`,
      "bytes",
      limits.maxEnvBytes,
      "--max-env-bytes",
    );
  }
  return undefined;
}

/** Throws ARGS_TOO_LARGE or ENV_TOO_LARGE if decoded args or env exceed the caps. */
export function checkArgsAndEnv(args: readonly string[], env: ReadonlyMap<string, string>, limits: RequestLimits): void {
  // Counts first: they bound the cost of measuring the bytes.
  const countError = argsOverLimit(args.length, 0, limits) ?? envOverLimit(env.size, 0, limits);
  if (countError) throw countError;
  let argsBytes = 0;
  for (const arg of args) argsBytes += Buffer.byteLength(arg);
  let envBytes = 0;
  for (const [key, value] of env) envBytes += Buffer.byteLength(key) + Buffer.byteLength(value);
  const bytesError = argsOverLimit(args.length, argsBytes, limits) ?? envOverLimit(env.size, envBytes, limits);
  if (bytesError) throw bytesError;
}

function tooLarge(reason: "ARGS_TOO_LARGE" | "ENV_TOO_LARGE", what: string, limit: string, max: number, flag: string): SandboxError {
  return new SandboxError(reason, `${what}; this daemon accepts at most ${max} (${flag})`, { metadata: { limit, max: String(max) } });
}
