import type { Mount, Policy } from "../gen/pb/sandbox/v1/sandbox.js";

/** Outcome of parsing: the value, or one sentence saying what is wrong and where. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

/** Largest uint32 (timeout_ms). */
const UINT32_MAX = 0xffff_ffff;

type IntKind = "int64" | "uint64" | "uint32";

/**
 * Parses a policy written as JSON in the shape of sandbox.v1.Policy, accepting the
 * proto3 JSON names (camelCase) and the .proto field names (snake_case), and
 * 64-bit integers as numbers or decimal strings (as proto3 JSON writes them).
 * Stricter than the generated fromJSON on purpose: an unknown or misspelled field
 * ("mount", "expires_at") is an error, because silently dropping it would sign a
 * policy that grants something other than what its author meant.
 */
export function parsePolicyJson(value: unknown): ParseResult<Policy> {
  if (!isRecord(value)) return fail("policy JSON must be an object");
  const fields = new Fields(value, "policy");
  const policy: Policy = {
    policyId: fields.string("policyId", "policy_id"),
    notBeforeUnix: fields.int("notBeforeUnix", "not_before_unix", "int64"),
    expiresAtUnix: fields.int("expiresAtUnix", "expires_at_unix", "int64"),
    moduleId: fields.string("moduleId", "module_id"),
    mounts: [],
    memoryLimitBytes: fields.int("memoryLimitBytes", "memory_limit_bytes", "uint64"),
    timeoutMs: fields.int("timeoutMs", "timeout_ms", "uint32"),
    maxOutputBytes: fields.int("maxOutputBytes", "max_output_bytes", "uint64"),
    maxWriteBytes: fields.int("maxWriteBytes", "max_write_bytes", "uint64"),
    fuelLimit: fields.int("fuelLimit", "fuel_limit", "uint64"),
    network: fields.bool("network", "network"),
    allowedHosts: [],
    maxHttpRequests: fields.int("maxHttpRequests", "max_http_requests", "uint32"),
    maxHttpResponseBytes: fields.int("maxHttpResponseBytes", "max_http_response_bytes", "uint64"),
    httpTimeoutMs: fields.int("httpTimeoutMs", "http_timeout_ms", "uint32"),
  };
  const hosts = fields.raw("allowedHosts", "allowed_hosts");
  if (hosts !== undefined && hosts !== null) {
    if (!Array.isArray(hosts) || !hosts.every((h): h is string => typeof h === "string"))
      return fail("policy.allowed_hosts must be an array of strings");
    policy.allowedHosts.push(...hosts);
  }
  const mounts = fields.raw("mounts", "mounts");
  if (mounts !== undefined && mounts !== null) {
    if (!Array.isArray(mounts)) return fail("policy.mounts must be an array");
    for (const [i, m] of mounts.entries()) {
      if (!isRecord(m)) return fail(`policy.mounts[${i}] must be an object`);
      const mf = new Fields(m, `policy.mounts[${i}]`);
      const mount: Mount = {
        hostPath: mf.string("hostPath", "host_path"),
        guestPath: mf.string("guestPath", "guest_path"),
        writable: mf.bool("writable", "writable"),
      };
      const error = mf.finish();
      if (error !== undefined) return fail(error);
      policy.mounts.push(mount);
    }
  }
  const error = fields.finish();
  return error === undefined ? { ok: true, value: policy } : fail(error);
}

function fail<T>(error: string): ParseResult<T> {
  return { ok: false, error };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads fields by either spelling, remembering the first problem and which keys were used. */
class Fields {
  readonly #obj: Record<string, unknown>;
  readonly #where: string;
  readonly #used = new Set<string>();
  #error: string | undefined;

  constructor(obj: Record<string, unknown>, where: string) {
    this.#obj = obj;
    this.#where = where;
  }

  raw(camel: string, snake: string): unknown {
    this.#used.add(camel).add(snake);
    const hasCamel = Object.hasOwn(this.#obj, camel);
    const hasSnake = camel !== snake && Object.hasOwn(this.#obj, snake);
    if (hasCamel && hasSnake) this.#problem(`${this.#where} gives both ${camel} and ${snake}`);
    return hasCamel ? this.#obj[camel] : this.#obj[snake];
  }

  string(camel: string, snake: string): string {
    const v = this.raw(camel, snake);
    if (v === undefined || v === null) return "";
    if (typeof v !== "string") return this.#problem(`${this.#where}.${snake} must be a string`, "");
    return v;
  }

  bool(camel: string, snake: string): boolean {
    const v = this.raw(camel, snake);
    if (v === undefined || v === null) return false;
    if (typeof v !== "boolean") return this.#problem(`${this.#where}.${snake} must be true or false`, false);
    return v;
  }

  int(camel: string, snake: string, kind: IntKind): number {
    const v = this.raw(camel, snake);
    if (v === undefined || v === null) return 0;
    const n = typeof v === "number" ? v : typeof v === "string" && /^-?[0-9]+$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n)) return this.#problem(`${this.#where}.${snake} must be an integer (a number or a decimal string)`, 0);
    if (kind !== "int64" && n < 0) return this.#problem(`${this.#where}.${snake} must not be negative`, 0);
    if (kind === "uint32" && n > UINT32_MAX) return this.#problem(`${this.#where}.${snake} must fit in 32 bits`, 0);
    return n;
  }

  /** The first problem met, or an unknown field; undefined if the object was clean. */
  finish(): string | undefined {
    if (this.#error !== undefined) return this.#error;
    const unknown = Object.keys(this.#obj).filter((k) => !this.#used.has(k));
    return unknown.length === 0 ? undefined : `${this.#where} has unknown field(s): ${unknown.join(", ")}`;
  }

  #problem<T>(message: string, fallback?: T): T {
    this.#error ??= message;
    return fallback as T;
  }
}
