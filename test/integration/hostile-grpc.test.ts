import type { ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { ExecuteRequest } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, helloWasm, register } from "../helpers/hostile.js";
import { rawSandboxClient } from "../helpers/raw-grpc.js";

const Status = { INVALID_ARGUMENT: 3, RESOURCE_EXHAUSTED: 8, INTERNAL: 13 } as const;

/** Malformed and oversized requests on the wire, below any typed client, against a real daemon. */
describe("hostile gRPC requests against a real daemon", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;

  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "2"] });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
  });
  checkSurvivalAfterEach(() => ({ daemon, pid, helloId }));

  it("bytes that are not a protobuf are the client's error: INVALID_ARGUMENT / INVALID_REQUEST, not INTERNAL", async function () {
    const raw = rawSandboxClient(daemon.socketPath);
    try {
      for (const bytes of [
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]),
        Buffer.from("garbage garbage"),
      ]) {
        const r = await raw.execute(bytes);
        expect(r.code, r.details).to.equal(Status.INVALID_ARGUMENT);
        expect(r.details).to.contain("not a valid protobuf message");
      }
    } finally {
      raw.close();
    }
  });

  it("a request over the message limit is RESOURCE_EXHAUSTED", async function () {
    const raw = rawSandboxClient(daemon.socketPath);
    try {
      const huge = Buffer.from(
        ExecuteRequest.encode(executeRequest({ target: moduleTarget(helloId), stdin: Buffer.alloc(130 * 1024 * 1024) })).finish(),
      );
      const r = await raw.execute(huge);
      expect(r.code).to.equal(Status.RESOURCE_EXHAUSTED);
    } finally {
      raw.close();
    }
  });

  it("a gzip bomb (200 MB of stdin compressed to a few hundred kB) is RESOURCE_EXHAUSTED, not inflated", async function () {
    const raw = rawSandboxClient(daemon.socketPath, { "grpc.default_compression_algorithm": 2 });
    try {
      const bomb = Buffer.from(
        ExecuteRequest.encode(executeRequest({ target: moduleTarget(helloId), stdin: Buffer.alloc(200 * 1024 * 1024) })).finish(),
      );
      const r = await raw.execute(bomb);
      expect(r.code).to.equal(Status.RESOURCE_EXHAUSTED);
    } finally {
      raw.close();
    }
  });

  it("stdin just under the message limit but over MAX_STDIN_BYTES is INVALID_ARGUMENT", async function () {
    const r = await daemon.execute({ target: moduleTarget(helloId), stdin: Buffer.alloc(17 * 1024 * 1024) }).catch((e: ServiceError) => e);
    expect((r as ServiceError).code).to.equal(Status.INVALID_ARGUMENT);
  });
});
