import { expect } from "chai";
import { ExecuteEvent } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { serializeExecuteEvent } from "../../src/grpc/output-event-encoding.js";

describe("StreamOutput's fast output-event encoding", function () {
  // Lengths around every varint boundary, plus empty.
  const sizes = [0, 1, 127, 128, 16_383, 16_384, 300_000, 2_097_152];
  for (const $case of ["stdout", "stderr"] as const) {
    for (const size of sizes) {
      it(`${$case} of ${size} bytes encodes byte for byte as the generated encoder does`, function () {
        const data = Buffer.alloc(size, 0x61 + (size % 26));
        const event: ExecuteEvent = { event: { $case, value: data } };
        const fast = serializeExecuteEvent(event);
        expect(Buffer.compare(fast, Buffer.from(ExecuteEvent.encode(event).finish()))).to.equal(0);
        expect(ExecuteEvent.decode(fast)).to.deep.equal(event);
      });
    }
  }

  it("encodes a view into a larger buffer without its neighbours", function () {
    const backing = Buffer.from("xxxxhelloyyyy");
    const event: ExecuteEvent = { event: { $case: "stdout", value: backing.subarray(4, 9) } };
    expect(ExecuteEvent.decode(serializeExecuteEvent(event)).event).to.deep.equal({ $case: "stdout", value: Buffer.from("hello") });
  });

  it("leaves other events to the generated encoder", function () {
    const event: ExecuteEvent = { event: { $case: "started", value: { executionId: "e", moduleId: "m" } } };
    expect(ExecuteEvent.decode(serializeExecuteEvent(event))).to.deep.equal(event);
  });
});
