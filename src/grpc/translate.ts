/** Conversions between wire messages and the core's plain types. */
import { SandboxError } from "../errors/sandbox-error.js";
import type { Diagnostic as CoreDiagnostic, Span as CoreSpan } from "../compiler/diagnostics.js";
import type { RepairResult } from "../compiler/repair.js";
import { MAX_GRPC_MESSAGE_BYTES, MAX_STREAM_EVENT_OUTPUT_BYTES, MAX_UNARY_OUTPUT_BYTES } from "../limits.js";
import {
  Applicability,
  type CompileRequest,
  type CompileResponse,
  type Diagnostic,
  type ExecuteEvent,
  type ExecuteRequest,
  ExecuteResponse,
  type InfoResponse,
  type Repair,
  Severity,
  type Span,
} from "../gen/grpc/sandbox/v1/sandbox.js";
import type { RequestLimits } from "../request-limits.js";
import type { CompileInput, CompileOutcome, ExecuteInput, ExecuteResult, SandboxInfo } from "../sandbox.js";
import { SANDBOXD_VERSION } from "../version.js";
import { scanCompileRequest, scanExecuteRequest } from "./request-scan.js";
import { PROTO_OUTCOMES } from "../receipt/receipt.js";

const SEVERITIES: Record<CoreDiagnostic["severity"], Severity> = {
  error: Severity.SEVERITY_ERROR,
  warning: Severity.SEVERITY_WARNING,
  note: Severity.SEVERITY_NOTE,
  help: Severity.SEVERITY_HELP,
};

const APPLICABILITIES: Record<CoreSpan["applicability"], Applicability> = {
  none: Applicability.APPLICABILITY_UNSPECIFIED,
  machine_applicable: Applicability.APPLICABILITY_MACHINE_APPLICABLE,
  maybe_incorrect: Applicability.APPLICABILITY_MAYBE_INCORRECT,
  has_placeholders: Applicability.APPLICABILITY_HAS_PLACEHOLDERS,
  unknown: Applicability.APPLICABILITY_UNKNOWN,
};

const EMPTY = Buffer.alloc(0);

/** Marks a request refused while decoding; the handler then throws the error it carries. */
const REFUSED = Symbol("refused");

/** A stand-in for a request refused before (or by) decoding. */
function refusedRequest<T>(error: SandboxError): T {
  return { [REFUSED]: error } as T;
}

/**
 * Wraps a generated decoder so that bytes which do not decode become a marked
 * request instead of an exception: grpc-js would answer a throwing decoder with
 * INTERNAL, but a malformed request is the client's error, not ours.
 */
export function tolerantDecoder<T>(decode: (bytes: Buffer) => T): (bytes: Buffer) => T {
  return (bytes) => {
    try {
      return decode(bytes);
    } catch (e: unknown) {
      return refusedRequest(
        new SandboxError("INVALID_REQUEST", `the request is not a valid protobuf message: ${e instanceof Error ? e.message : String(e)}`),
      );
    }
  };
}

/**
 * The CompileRequest decoder: a tolerant decoder that first refuses, without
 * decoding it, a message of more fields than a real one has.
 */
export function compileRequestDecoder(decode: (bytes: Buffer) => CompileRequest): (bytes: Buffer) => CompileRequest {
  const tolerant = tolerantDecoder(decode);
  return (bytes) => {
    const { refused } = scanCompileRequest(bytes);
    return refused ? refusedRequest(refused) : tolerant(bytes);
  };
}

/**
 * The ExecuteRequest decoder: a tolerant decoder that first measures `args`,
 * `env` and the field count on the wire and refuses them over `limits` without
 * decoding them, since decoding is itself what a flood of tiny fields makes
 * expensive.
 */
export function executeRequestDecoder(decode: (bytes: Buffer) => ExecuteRequest, limits: RequestLimits): (bytes: Buffer) => ExecuteRequest {
  const tolerant = tolerantDecoder(decode);
  return (bytes) => {
    const { refused } = scanExecuteRequest(bytes, limits);
    return refused ? refusedRequest(refused) : tolerant(bytes);
  };
}

/** Throws the error of a request refused while decoding (see tolerantDecoder). */
export function rejectRefused(request: object): void {
  const error = (request as { [REFUSED]?: SandboxError })[REFUSED];
  if (error !== undefined) throw error;
}

/** CompileRequest → core input; exactly one oneof member must be set. */
export function compileInputFrom(request: CompileRequest): CompileInput {
  rejectRefused(request);
  const input = request.input;
  if (!input) throw new SandboxError("INVALID_REQUEST", "CompileRequest needs exactly one of `source` or `wasm`");
  if (input.$case === "source") return { source: input.value, repair: request.repair };
  if (input.value.byteLength === 0) throw new SandboxError("INVALID_WASM", "wasm is empty");
  return { wasm: input.value };
}

/** ExecuteRequest → core input; exactly one target must be set. */
export function executeInputFrom(request: ExecuteRequest): ExecuteInput {
  rejectRefused(request);
  const target = request.target;
  if (!target) throw new SandboxError("INVALID_REQUEST", "ExecuteRequest needs exactly one of `module_id` or `source`");
  if (target.$case === "source" && target.value.trim() === "") throw new SandboxError("EMPTY_SOURCE", "source is empty");
  return {
    target: target.$case === "source" ? { source: target.value } : { moduleId: target.value },
    stdin: request.stdin,
    args: request.args,
    env: request.env,
    policy: request.policy,
  };
}

/** Core compile result → CompileResponse. */
export function compileResponseFrom(result: CompileOutcome, durationUs: number): CompileResponse {
  return {
    ok: result.ok,
    moduleId: result.moduleId,
    cacheHit: result.cacheHit,
    diagnostics: result.diagnostics.map(diagnosticFrom),
    durationUs,
    fixedSource: result.fixedSource,
    repair: result.repair && repairFrom(result.repair),
  };
}

function repairFrom(r: RepairResult): Repair {
  return {
    source: r.source,
    moduleId: r.moduleId,
    edits: r.edits.map((e) => ({ round: e.round, span: spanFrom(e.span), code: e.code, message: e.message, suggestion: e.suggestion })),
    rounds: r.rounds,
    cacheHit: r.cacheHit,
    diagnostics: r.diagnostics.map(diagnosticFrom),
  };
}

/** Core execution result → ExecuteResponse. exit_code is present only with OUTCOME_EXITED. */
export function executeResponseFrom(result: ExecuteResult): ExecuteResponse {
  // Built field by field, without spreads or copies of what is already plain: this runs once per call.
  const diagnostics = result.diagnostics.length === 0 ? [] : result.diagnostics.map(diagnosticFrom);
  const receipt = result.receipt && {
    receipt: asBuffer(result.receipt.receipt),
    keyId: result.receipt.keyId,
    signature: asBuffer(result.receipt.signature),
  };
  if (result.outcome === "compile_error") {
    return {
      outcome: PROTO_OUTCOMES[result.outcome],
      diagnostics,
      moduleId: result.moduleId,
      durationUs: result.durationUs,
      compileDurationUs: result.compileDurationUs,
      exitCode: undefined,
      stdout: EMPTY,
      stderr: EMPTY,
      message: "source did not compile",
      denials: [],
      fuelConsumed: 0,
      receipt,
    };
  }
  return {
    outcome: PROTO_OUTCOMES[result.outcome],
    diagnostics,
    moduleId: result.moduleId,
    durationUs: result.durationUs,
    compileDurationUs: result.compileDurationUs,
    exitCode: result.outcome === "exited" ? result.exitCode : undefined,
    stdout: asBuffer(result.stdout),
    stderr: asBuffer(result.stderr),
    message: result.message,
    denials: result.denials.length === 0 ? [] : result.denials.map((d) => ({ operation: d.operation, path: d.path, reason: d.reason })),
    fuelConsumed: result.fuelConsumed,
    receipt,
  };
}

/** Protobuf framing of one bytes field beyond its payload: a tag and a length of at most 5 bytes each (generous). */
const BYTES_FIELD_FRAMING_BYTES = 10;

/**
 * Throws UNARY_OUTPUT_TOO_LARGE if `response` would not fit in one gRPC message. Output caps are
 * checked before a run so this should never fire; if it does, the client still gets a catalogued
 * reason instead of the transport's bare RESOURCE_EXHAUSTED. Output bytes are counted, not copied.
 */
export function checkUnaryResponseFits(response: ExecuteResponse): void {
  const rest = ExecuteResponse.encode({ ...response, stdout: EMPTY, stderr: EMPTY }).finish().byteLength;
  const bytes = rest + response.stdout.byteLength + response.stderr.byteLength + 2 * BYTES_FIELD_FRAMING_BYTES;
  if (bytes <= MAX_GRPC_MESSAGE_BYTES) return;
  throw new SandboxError(
    "UNARY_OUTPUT_TOO_LARGE",
    `the result is ${bytes} bytes, more than one response can carry (${MAX_GRPC_MESSAGE_BYTES}); run it with StreamOutput, or with a max_output_bytes of at most ${MAX_UNARY_OUTPUT_BYTES}`,
    { metadata: { response_bytes: String(bytes), max_message_bytes: String(MAX_GRPC_MESSAGE_BYTES) } },
  );
}

/**
 * One chunk of guest output as StreamOutput events of at most MAX_STREAM_EVENT_OUTPUT_BYTES each:
 * a guest's single large write would otherwise be one event beyond clients' receive limits. The
 * events are views of the chunk, not copies.
 */
export function outputEvents(stream: "stdout" | "stderr", chunk: Uint8Array): ExecuteEvent["event"][] {
  const events: ExecuteEvent["event"][] = [];
  for (let offset = 0; offset < chunk.byteLength; offset += MAX_STREAM_EVENT_OUTPUT_BYTES) {
    events.push({ $case: stream, value: asBuffer(chunk.subarray(offset, offset + MAX_STREAM_EVENT_OUTPUT_BYTES)) });
  }
  return events;
}

/** A Buffer view of the same bytes (the generated messages type bytes as Buffer); no copy. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function diagnosticFrom(d: CoreDiagnostic): Diagnostic {
  return {
    severity: SEVERITIES[d.severity],
    code: d.code,
    message: d.message,
    spans: d.spans.map(spanFrom),
    rendered: d.rendered,
    children: d.children.map(diagnosticFrom),
    explanation: d.explanation,
  };
}

function spanFrom(s: CoreSpan): Span {
  return { ...s, applicability: APPLICABILITIES[s.applicability] };
}

/** The Info RPC's answer for what the core reports. */
export function infoResponseFrom(info: SandboxInfo): InfoResponse {
  return {
    version: SANDBOXD_VERSION,
    toolchain: { available: info.toolchain.unavailableReason === "", ...info.toolchain },
    defaults: {
      memoryBytes: info.defaults.memoryLimitBytes,
      timeoutMs: info.defaults.timeoutMs,
      outputBytes: info.defaults.maxOutputBytes,
      writeBytes: info.defaults.maxWriteBytes,
    },
    ceilings: {
      memoryBytes: info.ceilings.maxMemoryBytes,
      timeoutMs: info.ceilings.maxTimeoutMs,
      outputBytes: info.ceilings.maxOutputBytes,
      writeBytes: info.ceilings.maxWriteBytes,
    },
    trustedKeyIds: [...info.trustedKeyIds],
    allowUnsigned: info.allowUnsigned,
    allowedMountRoots: [...info.ceilings.allowedRoots],
    cache: { entries: info.cache.entries, sizeBytes: info.cache.bytes, maxBytes: info.cache.maxBytes },
    workers: { ...info.workers },
  };
}
