/**
 * SandboxService handlers: decode the request, call the core, encode the
 * result. Errors of any kind go through toServiceError; nothing a client sends
 * can throw past a handler.
 */
import type { Deadline, ServerUnaryCall, ServerWritableStream, sendUnaryData, ServiceError } from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { SandboxError } from "../errors/sandbox-error.js";
import { elapsedUs } from "../elapsed.js";
import type { Logger } from "../logger.js";
import type {
  CompileRequest,
  CompileResponse,
  ExecuteEvent,
  ExecuteRequest,
  ExecuteResponse,
  InfoRequest,
  InfoResponse,
  SandboxServiceServer,
} from "../gen/grpc/sandbox/v1/sandbox.js";
import type { ExecuteResult, Sandbox } from "../sandbox.js";
import { auditLog, type CallObserver, type CallRecord } from "./call-audit.js";
import { toServiceError } from "./status.js";
import {
  checkUnaryResponseFits,
  compileInputFrom,
  compileResponseFrom,
  executeInputFrom,
  executeResponseFrom,
  infoResponseFrom,
  outputEvents,
  rejectRefused,
} from "./translate.js";

/** The abort reason of every call the client cancelled. */
const CLIENT_CANCELLED = new SandboxError("CANCELLED", "cancelled by the client");
/** The abort reason of every call whose deadline passed. */
const DEADLINE_PASSED = new SandboxError("CANCELLED", "the call's deadline passed");
/**
 * How long after a call's deadline the handler aborts it itself. grpc-js answers DEADLINE_EXCEEDED at the
 * deadline and normally tells the handler; aborting at the very same moment could race that answer with
 * a CANCELLED result, so the handler's own abort only catches calls grpc-js never told it about.
 */
const DEADLINE_ABORT_GRACE_MS = 250;

/** What callSignal needs of a grpc-js server call. */
interface CancellableCall {
  readonly cancelled: boolean;
  getDeadline(): Deadline;
  on(event: "cancelled", listener: () => void): unknown;
}

/**
 * One AbortSignal per call, fired by client cancellation, deadline, or daemon
 * shutdown; the core hands it to rustc and to the worker running the guest.
 * `release` must run when the call ends. Live calls are kept in `live` and
 * aborted from there on shutdown: a listener per call on the shutdown signal
 * costs an EventTarget registration each, and grpc-js emits "cancelled" at the
 * end of every call, finished or not, so only a call still running is aborted.
 */
function callSignal(call: CancellableCall, shutdown: AbortSignal, live: Set<AbortController>): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  if (shutdown.aborted) controller.abort(shutdown.reason);
  else live.add(controller);
  // A shared reason keeps a cancel from costing an Error (and its stack).
  const abort = (reason: SandboxError): void => {
    if (live.delete(controller)) controller.abort(reason);
  };
  call.on("cancelled", () => abort(CLIENT_CANCELLED));
  // But only to a call object that existed when it happened: a unary call cancelled, or past its deadline,
  // while grpc-js was still reading its request never gets the event, and its guest ran on to the policy's
  // own timeout with nobody waiting. So the handler also looks for itself, and keeps its own deadline.
  if (call.cancelled) abort(CLIENT_CANCELLED);
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  let timer: NodeJS.Timeout | undefined;
  if (Number.isFinite(deadlineMs)) {
    const leftMs = deadlineMs + DEADLINE_ABORT_GRACE_MS - Date.now();
    if (leftMs <= 0) abort(DEADLINE_PASSED);
    else timer = setTimeout(() => abort(DEADLINE_PASSED), leftMs).unref();
  }
  return {
    signal: controller.signal,
    release: () => {
      clearTimeout(timer);
      live.delete(controller);
    },
  };
}

/**
 * Writes events to a server stream. Each write's promise settles when grpc-js has handed the
 * message on (its write callback) or the call is over, whichever comes first, so the core can hold
 * a guest back while its reader is slow and never waits on a call that is gone.
 */
function streamWriter(
  call: ServerWritableStream<ExecuteRequest, ExecuteEvent>,
): (event: ExecuteEvent["event"]) => Promise<void> | undefined {
  const waiting = new Set<() => void>();
  const settleAll = (): void => {
    for (const settle of waiting) settle();
    waiting.clear();
  };
  call.once("cancelled", settleAll);
  call.once("close", settleAll);
  call.once("error", settleAll);
  return (event) => {
    if (call.cancelled || call.destroyed) return undefined;
    return new Promise<void>((resolve) => {
      const settle = (): void => {
        waiting.delete(settle);
        resolve();
      };
      waiting.add(settle);
      call.write({ event }, settle);
    });
  };
}

/** A record's fields that a call without a run leaves empty. */
const EMPTY_RECORD = { moduleId: "", executionId: "", policyId: "", keyId: "", durationUs: 0, compileDurationUs: 0, denials: [] } as const;

/** The record of a run that returned a result. */
function runRecord(method: CallRecord["method"], peer: string, result: ExecuteResult): CallRecord {
  const a = result.audit;
  return {
    method,
    peer,
    moduleId: result.moduleId,
    executionId: a.executionId,
    policyId: a.policyId,
    keyId: a.keyId,
    outcome: result.outcome,
    ...(result.outcome === "exited" ? { exitCode: result.exitCode } : {}),
    durationUs: result.durationUs,
    compileDurationUs: result.compileDurationUs,
    ...(a.compileCacheHit === undefined ? {} : { cacheHit: a.compileCacheHit }),
    ...(a.memoryHit === undefined ? {} : { memoryHit: a.memoryHit }),
    denials: "denials" in result ? result.denials.map((d) => d.operation) : [],
  };
}

/** The record of a call refused or failed before it had a result. */
function refusedRecord(method: CallRecord["method"], peer: string, request: Partial<ExecuteRequest>, e: unknown): CallRecord {
  const error = SandboxError.from(e);
  const target = request.target;
  return {
    ...EMPTY_RECORD,
    method,
    peer,
    moduleId: target?.$case === "moduleId" ? target.value : "",
    keyId: request.policy?.keyId ?? "",
    outcome: "refused",
    reason: error.reason,
    detail: error.message,
  };
}

/** Builds the SandboxService implementation around a core; `observe` hears of every Compile, Execute and StreamOutput. */
export function sandboxService(
  sandbox: Sandbox,
  logger: Logger,
  shutdown: AbortSignal,
  observe: CallObserver = auditLog(logger),
): SandboxServiceServer {
  const live = new Set<AbortController>();
  // Not AbortSignal.any: on Node 20 every signal it makes stays in the source's dependants forever (nodejs/node#55351).
  shutdown.addEventListener(
    "abort",
    () => {
      for (const controller of live) controller.abort(shutdown.reason);
      live.clear();
    },
    { once: true },
  );
  const fail = (method: string, e: unknown): Partial<ServiceError> => {
    const status = toServiceError(e);
    const error = SandboxError.from(e);
    if (error.reason === "INTERNAL")
      logger.error(`${method} failed`, { error: String(error.cause), stack: (error.cause as Error | undefined)?.stack });
    else logger.debug(`${method} refused`, { reason: error.reason, message: error.message });
    return status;
  };

  return {
    async compile(call: ServerUnaryCall<CompileRequest, CompileResponse>, callback: sendUnaryData<CompileResponse>) {
      const started = performance.now();
      const { signal, release } = callSignal(call, shutdown, live);
      try {
        const result = await sandbox.compile(compileInputFrom(call.request), signal);
        const durationUs = elapsedUs(started);
        const outcome = result.ok ? "compiled" : "compile_failed";
        const repaired = result.repair && { repairedModuleId: result.repair.moduleId, repairRounds: result.repair.rounds };
        observe({
          ...EMPTY_RECORD,
          method: "Compile",
          peer: call.getPeer(),
          moduleId: result.moduleId,
          outcome,
          durationUs,
          compileDurationUs: durationUs,
          cacheHit: result.cacheHit,
          ...repaired,
        });
        callback(null, compileResponseFrom(result, durationUs));
      } catch (e: unknown) {
        observe({ ...refusedRecord("Compile", call.getPeer(), {}, e), compileDurationUs: elapsedUs(started) });
        callback(fail("compile", e) as ServiceError, null);
      } finally {
        release();
      }
    },

    async execute(call: ServerUnaryCall<ExecuteRequest, ExecuteResponse>, callback: sendUnaryData<ExecuteResponse>) {
      const { signal, release } = callSignal(call, shutdown, live);
      try {
        const result = await sandbox.execute(executeInputFrom(call.request), signal);
        const response = executeResponseFrom(result);
        checkUnaryResponseFits(response);
        observe(runRecord("Execute", call.getPeer(), result));
        callback(null, response);
      } catch (e: unknown) {
        observe(refusedRecord("Execute", call.getPeer(), call.request, e));
        callback(fail("execute", e) as ServiceError, null);
      } finally {
        release();
      }
    },

    async streamOutput(call: ServerWritableStream<ExecuteRequest, ExecuteEvent>) {
      const send = streamWriter(call);
      // Events are written in order, so the last piece of a chunk being handed on means all were.
      const sendOutput = (stream: "stdout" | "stderr", chunk: Uint8Array): Promise<void> | undefined => {
        let last: Promise<void> | undefined;
        for (const event of outputEvents(stream, chunk)) last = send(event);
        return last;
      };
      const { signal, release } = callSignal(call, shutdown, live);
      try {
        const result = await sandbox.execute(executeInputFrom(call.request), signal, {
          onCompiling: (cacheHit) => void send({ $case: "compiling", value: { cacheHit } }),
          onStarted: (executionId, moduleId) => void send({ $case: "started", value: { executionId, moduleId } }),
          onStdout: (chunk) => sendOutput("stdout", chunk),
          onStderr: (chunk) => sendOutput("stderr", chunk),
          onDenial: (denial) => void send({ $case: "denial", value: { ...denial } }),
        });
        observe(runRecord("StreamOutput", call.getPeer(), result));
        // A source that did not compile never started: the stream is `compiling` then `finished`.
        void send({ $case: "finished", value: executeResponseFrom(result) });
        call.end();
      } catch (e: unknown) {
        observe(refusedRecord("StreamOutput", call.getPeer(), call.request, e));
        call.emit("error", fail("streamOutput", e));
      } finally {
        release();
      }
    },

    async info(call: ServerUnaryCall<InfoRequest, InfoResponse>, callback: sendUnaryData<InfoResponse>) {
      try {
        rejectRefused(call.request);
        callback(null, infoResponseFrom(await sandbox.info()));
      } catch (e: unknown) {
        callback(fail("info", e) as ServiceError, null);
      }
    },
  };
}
