import { Code } from "./codes.js";

/** A machine-readable failure reason and the code it always carries. */
export interface ReasonInfo {
  readonly code: Code;
  /** One sentence for the README's error catalogue. */
  readonly description: string;
}

/**
 * The catalogue of every reason an RPC can fail with. Clients switch on these
 * strings (sent as google.rpc.ErrorInfo.reason), so they never change meaning.
 * The README lists them; test/unit/error-catalogue.test.ts keeps the two in step.
 */
export const REASONS = {
  INVALID_REQUEST: {
    code: Code.InvalidArgument,
    description:
      "The request is malformed: a required field is missing, a oneof has neither or both members, or it holds more protobuf fields than any request within the daemon's limits.",
  },
  EMPTY_SOURCE: { code: Code.InvalidArgument, description: "The Rust source is empty." },
  SOURCE_TOO_LARGE: { code: Code.InvalidArgument, description: "The Rust source exceeds the daemon's size limit." },
  INVALID_WASM: {
    code: Code.InvalidArgument,
    description:
      "The bytes are not a valid WASI preview1 command module (bad binary, missing `_start`/`memory`, or imports outside `wasi_snapshot_preview1` and `sandboxd_http_v1`, or with another signature).",
  },
  WASM_TOO_LARGE: { code: Code.InvalidArgument, description: "The precompiled module exceeds the daemon's size limit." },
  INVALID_MODULE_ID: { code: Code.InvalidArgument, description: "The module id is not 64 lowercase hex characters." },
  STDIN_TOO_LARGE: { code: Code.InvalidArgument, description: "stdin exceeds the daemon's size limit." },
  UNARY_OUTPUT_TOO_LARGE: {
    code: Code.InvalidArgument,
    description:
      "The policy's max_output_bytes lets stdout and stderr outgrow one Execute response (the message says the largest cap Execute accepts); use StreamOutput, or a smaller cap.",
  },
  ARGS_TOO_LARGE: {
    code: Code.InvalidArgument,
    description: "`args` has more entries or more bytes than the daemon accepts (`--max-args`, `--max-args-bytes`).",
  },
  ENV_TOO_LARGE: {
    code: Code.InvalidArgument,
    description: "`env` has more variables or more bytes than the daemon accepts (`--max-env-vars`, `--max-env-bytes`).",
  },
  POLICY_TOO_LARGE: {
    code: Code.InvalidArgument,
    description: "The signed policy's bytes, or its list of mounts, exceed the daemon's limits.",
  },
  MODULE_NOT_FOUND: { code: Code.NotFound, description: "No module with this id is cached; compile it first." },
  TOOLCHAIN_MISSING: {
    code: Code.FailedPrecondition,
    description:
      "The toolchain cannot build modules: no rustc with a wasm32-wasip1/wasm32-wasi std, or (found by the start-up probe build) no linker; the message, and ErrorInfo metadata `install`, name the Debian packages to install.",
  },
  COMPILE_SANDBOX_MISSING: {
    code: Code.FailedPrecondition,
    description: "bubblewrap is not available to make rustc hermetic and --insecure-compile was not given.",
  },
  COMPILE_TIMEOUT: { code: Code.ResourceExhausted, description: "rustc exceeded its wall-clock or memory budget." },
  COMPILE_QUEUE_FULL: { code: Code.ResourceExhausted, description: "Too many compiles are queued; retry later." },
  EXECUTION_QUEUE_FULL: { code: Code.ResourceExhausted, description: "Too many executions are queued; retry later." },
  POLICY_REQUIRED: {
    code: Code.Unauthenticated,
    description: "The request carries no signed policy and the daemon does not allow unsigned runs.",
  },
  POLICY_UNKNOWN_KEY: { code: Code.Unauthenticated, description: "The policy's key_id names no trusted key." },
  POLICY_BAD_SIGNATURE: {
    code: Code.Unauthenticated,
    description: "The signature does not verify over the policy bytes with the named key.",
  },
  POLICY_MALFORMED: {
    code: Code.Unauthenticated,
    description:
      "The signed policy bytes do not decode as a Policy, carry a field this daemon does not know, or grant network without allowed_hosts (or the reverse) or a malformed host.",
  },
  POLICY_NOT_YET_VALID: { code: Code.PermissionDenied, description: "The policy's not_before_unix is in the future." },
  POLICY_EXPIRED: { code: Code.PermissionDenied, description: "The policy's expires_at_unix is in the past, or missing." },
  POLICY_MODULE_MISMATCH: { code: Code.PermissionDenied, description: "The policy is bound to a different module_id." },
  POLICY_CEILING_EXCEEDED: {
    code: Code.PermissionDenied,
    description: "A limit in the policy, or an allowed_hosts entry, exceeds the operator's ceiling.",
  },
  POLICY_MOUNT_DENIED: {
    code: Code.PermissionDenied,
    description:
      "A mount's host path does not exist, is not a directory, or is outside the allowed roots; or its guest path is malformed, duplicated or nested in another.",
  },
  MODULE_BLOCKED: {
    code: Code.PermissionDenied,
    description: "The module id is on the operator's blocklist; Compile and Execute refuse it until it is unblocked.",
  },
  UNSUPPORTED: { code: Code.Unimplemented, description: "The request uses a feature this daemon does not implement yet." },
  CANCELLED: { code: Code.Cancelled, description: "The call was cancelled by the client or by daemon shutdown." },
  SHUTTING_DOWN: { code: Code.Unavailable, description: "The daemon is shutting down and accepts no new work." },
  INTERNAL: { code: Code.Internal, description: "An unexpected failure inside the daemon; its log has the details." },
} as const satisfies Record<string, ReasonInfo>;

/** Name of a catalogued failure reason. */
export type Reason = keyof typeof REASONS;
