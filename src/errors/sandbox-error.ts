import { Code } from "./codes.js";
import { REASONS, type Reason } from "./reasons.js";

/**
 * The one error type of the core. It carries a catalogued reason (which fixes
 * its code), a message for humans, optional metadata for machines, and the
 * cause. The gRPC layer turns it into a status in exactly one place.
 */
export class SandboxError extends Error {
  override readonly name = "SandboxError";
  readonly code: Code;
  readonly reason: Reason;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(reason: Reason, message: string, options: { cause?: unknown; metadata?: Record<string, string> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.code = REASONS[reason].code;
    this.metadata = options.metadata ?? {};
  }

  /**
   * Wraps anything thrown into a SandboxError. Unknown errors become INTERNAL
   * with the original kept as the cause (logged, never sent to clients).
   */
  static from(e: unknown): SandboxError {
    if (e instanceof SandboxError) return e;
    return new SandboxError("INTERNAL", "internal error", { cause: e });
  }
}
