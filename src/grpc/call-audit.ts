/**
 * One record per SandboxService call, for the operator: the audit log writes
 * it as one JSON line, the metrics count it. It carries ids, outcome, exit
 * code, durations, cache use and the peer, never a script's output, its stdin
 * or a policy's signature.
 */
import type { Logger } from "../logger.js";
import type { Reason } from "../errors/reasons.js";

/** What one finished (or refused) call did. */
export interface CallRecord {
  readonly method: "Compile" | "Execute" | "StreamOutput";
  /** The client's address as grpc-js reports it. */
  readonly peer: string;
  readonly moduleId: string;
  /** The run's id (as `started` carried it); empty when nothing ran. */
  readonly executionId: string;
  readonly policyId: string;
  readonly keyId: string;
  /** A run's outcome (`exited`, `timeout`, ..., `compile_error`), `compiled` / `compile_failed` for Compile, or `refused`. */
  readonly outcome: string;
  readonly exitCode?: number;
  /** The catalogued reason of a refused or failed call. */
  readonly reason?: Reason;
  readonly detail?: string;
  /** The guest's run time (Execute, StreamOutput) or the whole call's (Compile), in microseconds. */
  readonly durationUs: number;
  readonly compileDurationUs: number;
  /** Whether the compile result came from the cache (source targets and Compile). */
  readonly cacheHit?: boolean;
  /** Whether the compiled module was already in memory. */
  readonly memoryHit?: boolean;
  /** A Compile with repair: the module the repaired source became, and the rounds it took. */
  readonly repairedModuleId?: string;
  readonly repairRounds?: number;
  /** The operation of each denial, in order. */
  readonly denials: readonly string[];
}

/** Receives every call's record. */
export type CallObserver = (record: CallRecord) => void;

/** Refusals an operator must see without debug logging: the policy said no, or the module is blocked. */
const AUDITED_REFUSALS: ReadonlySet<string> = new Set([
  "POLICY_REQUIRED",
  "POLICY_UNKNOWN_KEY",
  "POLICY_BAD_SIGNATURE",
  "POLICY_MALFORMED",
  "POLICY_NOT_YET_VALID",
  "POLICY_EXPIRED",
  "POLICY_MODULE_MISMATCH",
  "POLICY_CEILING_EXCEEDED",
  "POLICY_MOUNT_DENIED",
  "MODULE_BLOCKED",
]);

/** The audit log: a `call` line per call at info, a `refused` line at warn for policy refusals and blocked modules. */
export function auditLog(logger: Logger): CallObserver {
  return (record) => {
    const { denials, ...fields } = record;
    const line = { ...fields, denials: denials.length, ...(denials.length > 0 ? { deniedOperations: [...new Set(denials)] } : {}) };
    if (record.reason !== undefined && AUDITED_REFUSALS.has(record.reason)) logger.warn("refused", line);
    // Other refusals (a full queue, a malformed request) come in storms under overload: debug only.
    else if (record.reason !== undefined) logger.debug("call", line);
    else if (logger.isInfoEnabled()) logger.info("call", line);
  };
}

/** Calls every observer in turn; one that throws never stops the others or the call. */
export function observers(...list: readonly CallObserver[]): CallObserver {
  return (record) => {
    for (const observe of list) {
      try {
        observe(record);
      } catch {
        // An observer is bookkeeping: the call's result must not depend on it.
      }
    }
  };
}
