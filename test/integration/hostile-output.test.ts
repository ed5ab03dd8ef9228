import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { SandboxServiceClient, type ExecuteResponse } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { buildModule, call, DROP, forever, i32, store32, WASI } from "../fixtures/hostile/wasm-builder.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, helloWasm, register } from "../helpers/hostile.js";

/** Per-stream output cap of this daemon: 8 Mi one-byte writes kept as 8 Mi typed arrays are well past the worker heap. */
const CAP_BYTES = 8 * 1024 * 1024;

/** Floods of one-byte writes, each kept until the run ends, against a real daemon. */
describe("hostile one-byte output floods against a real daemon", function () {
  this.timeout(180_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;

  before(async function () {
    daemon = await startDaemon({
      args: ["--allow-unsigned", "--workers", "2", "--max-output-bytes", String(CAP_BYTES), "--default-timeout-ms", "30000"],
    });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
  });
  checkSurvivalAfterEach(() => ({ daemon, pid, helloId }));

  /** `_start` writes one byte to `fd` per fd_write, forever. */
  const oneByteFlood = (fd: number): Uint8Array =>
    buildModule({
      imports: [WASI.fd_write],
      memory: { min: 1 },
      data: [{ offset: 16, bytes: [0x79] }],
      funcs: [
        {
          params: [],
          results: [],
          body: [...store32(0, 16), ...store32(4, 1), ...forever([...i32(fd), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP])],
        },
      ],
    });

  /** Execute through a client that accepts the 8 MiB response (grpc-js clients stop at 4 MiB by default). */
  async function executeBig(moduleId: string): Promise<ExecuteResponse> {
    const client = new SandboxServiceClient(`unix://${daemon.socketPath}`, credentials.createInsecure(), {
      "grpc.max_receive_message_length": -1,
    });
    try {
      return await new Promise((resolve, reject) =>
        client.execute(executeRequest({ target: moduleTarget(moduleId) }), new Metadata(), (e: ServiceError | null, r: ExecuteResponse) =>
          e ? reject(e) : resolve(r),
        ),
      );
    } finally {
      client.close();
    }
  }

  for (const fd of [1, 2]) {
    it(`regression: 8 Mi one-byte writes to ${fd === 1 ? "stdout" : "stderr"} end at the cap with all of it, not in a worker dead of heap OOM`, async function () {
      const r = await executeBig(await register(daemon, oneByteFlood(fd)));
      expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
      expect((fd === 1 ? r.stdout : r.stderr).length).to.equal(CAP_BYTES);
    });
  }
});
