import { expect } from "chai";
import { credentials, makeGenericClientConstructor, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { InfoResponse } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { errorInfoOf } from "../../src/grpc/status.js";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";

const identity = (b: Buffer): Buffer => b;

/** Calls Info with whatever bytes are given as the request. */
function rawInfo(socketPath: string, bytes: Buffer): Promise<{ code: number; reason: string | undefined; response: Buffer | undefined }> {
  const Raw = makeGenericClientConstructor(
    {
      info: {
        path: "/sandbox.v1.SandboxService/Info",
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    "RawInfo",
  );
  const client = new Raw(`unix://${socketPath}`, credentials.createInsecure());
  const stub = client as unknown as { info(b: Buffer, m: Metadata, cb: (e: ServiceError | null, v?: Buffer) => void): void };
  return new Promise((resolve) =>
    stub.info(bytes, new Metadata(), (e, v) => {
      client.close();
      resolve({ code: e ? e.code : status.OK, reason: e ? errorInfoOf(e.metadata)?.reason : undefined, response: v });
    }),
  );
}

describe("the Info RPC", function () {
  this.timeout(120_000);
  let daemon: TestDaemon | undefined;

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  it("refuses bytes that are no InfoRequest with INVALID_ARGUMENT/INVALID_REQUEST, ignores unknown fields, and keeps serving", async () => {
    daemon = await startDaemon();
    const garbage = await rawInfo(daemon.socketPath, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    expect(garbage).to.include({ code: status.INVALID_ARGUMENT, reason: "INVALID_REQUEST" });
    const unknownField = await rawInfo(daemon.socketPath, Buffer.from([0x08, 0x01]));
    expect(unknownField.code).to.equal(status.OK);
    expect(InfoResponse.decode(unknownField.response!).version).to.match(/^\d+\.\d+\.\d+/);
  });

  it("says why Compile is unavailable when the toolchain is missing, and still reports the rest", async () => {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--rustc", "/nonexistent/rustc"] });
    const answer = await rawInfo(daemon.socketPath, Buffer.alloc(0));
    expect(answer.code).to.equal(status.OK);
    const info = InfoResponse.decode(answer.response!);
    expect(info.toolchain?.available).to.equal(false);
    expect(info.toolchain?.unavailableReason).to.not.equal("");
    expect(info.workers?.workers).to.equal(1);
    expect(info.allowUnsigned).to.equal(true);
  });
});
