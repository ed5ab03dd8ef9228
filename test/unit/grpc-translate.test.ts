import { Metadata } from "@grpc/grpc-js";
import { expect } from "chai";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import { ExecuteResponse, Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { errorInfoOf, toServiceError } from "../../src/grpc/status.js";
import { checkUnaryResponseFits, executeResponseFrom, outputEvents } from "../../src/grpc/translate.js";
import {
  MAX_GRPC_MESSAGE_BYTES,
  MAX_STREAM_EVENT_OUTPUT_BYTES,
  MAX_UNARY_OUTPUT_BYTES,
  UNARY_RESPONSE_RESERVE_BYTES,
} from "../../src/limits.js";
import type { RunResult } from "../../src/runtime/execution.js";
import type { ExecuteResult } from "../../src/sandbox.js";

/** The audit fields of a run that names no policy. */
const AUDIT = { executionId: "e", policyId: "", keyId: "", compileCacheHit: undefined, memoryHit: true };

/** A run result with defaults for every field not given. */
const run = (fields: Partial<RunResult> & Pick<RunResult, "outcome">): ExecuteResult => ({
  exitCode: 0,
  stdout: new Uint8Array(0),
  stderr: new Uint8Array(0),
  message: "",
  denials: [],
  durationUs: 5,
  fuelConsumed: 0,
  denialCount: 0,
  moduleId: "m",
  diagnostics: [],
  compileDurationUs: 0,
  audit: AUDIT,
  ...fields,
});

describe("translate: ExecuteResponse", () => {
  it("sets exit_code only with OUTCOME_EXITED, so a 0 on the wire always means the guest exited with 0", () => {
    const exited = executeResponseFrom(run({ outcome: "exited", exitCode: 0 }));
    expect(ExecuteResponse.decode(ExecuteResponse.encode(exited).finish()).exitCode).to.equal(0);
    for (const outcome of ["timeout", "trap", "memory_limit", "output_limit", "cancelled"] as const) {
      const r = executeResponseFrom(run({ outcome }));
      expect(ExecuteResponse.decode(ExecuteResponse.encode(r).finish()).exitCode, outcome).to.equal(undefined);
    }
    const failed = executeResponseFrom({
      outcome: "compile_error",
      moduleId: "",
      diagnostics: [],
      durationUs: 0,
      compileDurationUs: 7,
      audit: AUDIT,
    });
    expect(failed).to.include({ outcome: Outcome.OUTCOME_COMPILE_ERROR, exitCode: undefined, durationUs: 0, compileDurationUs: 7 });
  });

  it("the largest output Execute accepts fits in one message with its reserve", () => {
    expect(2 * MAX_UNARY_OUTPUT_BYTES + UNARY_RESPONSE_RESERVE_BYTES).to.equal(MAX_GRPC_MESSAGE_BYTES);
    expect(Number.isSafeInteger(MAX_UNARY_OUTPUT_BYTES)).to.equal(true);
  });

  it("a response that would not fit in one message is a catalogued UNARY_OUTPUT_TOO_LARGE, not a bare transport error", () => {
    // allocUnsafeSlow: the pages are never touched, so these cost address space, not memory
    const half = Buffer.allocUnsafeSlow(MAX_GRPC_MESSAGE_BYTES / 2);
    const fits = executeResponseFrom(
      run({ outcome: "exited", stdout: half.subarray(0, MAX_UNARY_OUTPUT_BYTES), stderr: half.subarray(0, MAX_UNARY_OUTPUT_BYTES) }),
    );
    expect(() => checkUnaryResponseFits(fits)).to.not.throw();
    const over = executeResponseFrom(run({ outcome: "exited", stdout: half, stderr: half }));
    let caught: unknown;
    try {
      checkUnaryResponseFits(over);
    } catch (e: unknown) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(SandboxError);
    const status = toServiceError(caught);
    expect(errorInfoOf(status.metadata as Metadata)?.reason).to.equal("UNARY_OUTPUT_TOO_LARGE");
    expect(status.details).to.contain("StreamOutput");
  });
});

describe("translate: StreamOutput output events", () => {
  it("splits a large chunk into views of at most MAX_STREAM_EVENT_OUTPUT_BYTES, in order, without copying", () => {
    const chunk = new Uint8Array(2 * MAX_STREAM_EVENT_OUTPUT_BYTES + 3).map((_, i) => i % 251);
    const events = outputEvents("stderr", chunk);
    expect(events.map((e) => [e?.$case, (e?.value as Buffer).byteLength])).to.deep.equal([
      ["stderr", MAX_STREAM_EVENT_OUTPUT_BYTES],
      ["stderr", MAX_STREAM_EVENT_OUTPUT_BYTES],
      ["stderr", 3],
    ]);
    expect(Buffer.concat(events.map((e) => e?.value as Buffer)).equals(chunk)).to.equal(true);
    expect((events[1]?.value as Buffer).buffer).to.equal(chunk.buffer);
    expect(outputEvents("stdout", new Uint8Array(10))).to.have.length(1);
    expect(outputEvents("stdout", new Uint8Array(0))).to.deep.equal([]);
  });
});
