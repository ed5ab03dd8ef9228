/**
 * Shared checks of the red-team tests: after every attack the daemon must be the
 * same process, still SERVING, and still able to run an ordinary guest.
 */
import { credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { service as healthService } from "grpc-health-check";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { buildModule, call, DROP, i32, store32, WASI } from "../fixtures/hostile/wasm-builder.js";
import { connect } from "../../src/grpc/client.js";
import { moduleTarget, type TestDaemon } from "./daemon.js";

/**
 * A connection of its own for each check: grpc-js would otherwise reuse the attack's HTTP/2 session,
 * which Node's server may have closed on purpose (its rapid-reset guard, after 1,000+ cancelled streams).
 */
const FRESH_CONNECTION = { "grpc.use_local_subchannel_pool": 1 } as const;

/** A well-behaved hand-made guest: writes "ok\n" to stdout and returns (exit 0). */
export function helloWasm(): Uint8Array<ArrayBuffer> {
  return buildModule({
    imports: [WASI.fd_write],
    memory: { min: 1 },
    data: [{ offset: 16, bytes: [...Buffer.from("ok\n")] }],
    funcs: [
      {
        params: [],
        results: [],
        body: [...store32(0, 16), ...store32(4, 3), ...i32(1), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP],
      },
    ],
  });
}

/** Registers a hand-made module through Compile{wasm} and returns its id. */
export async function register(daemon: TestDaemon, wasm: Uint8Array): Promise<string> {
  const response = await daemon.compile({ input: { $case: "wasm", value: Buffer.from(wasm) } });
  expect(response.ok, JSON.stringify(response.diagnostics)).to.equal(true);
  return response.moduleId;
}

/** grpc.health.v1 Check of the whole server, or of one service. */
export async function healthStatus(daemon: TestDaemon, service = ""): Promise<string> {
  const Health = makeGenericClientConstructor(healthService, "Health");
  const health = new Health(`unix://${daemon.socketPath}`, credentials.createInsecure(), FRESH_CONNECTION);
  try {
    const reply = await new Promise<{ status: string }>((resolve, reject) =>
      health.check({ service }, { deadline: Date.now() + 10_000 }, (e: ServiceError | null, v: { status: string }) =>
        e ? reject(e) : resolve(v),
      ),
    );
    return reply.status;
  } finally {
    health.close();
  }
}

/** The daemon survived: same pid, alive, SERVING, and an ordinary Execute still works. */
export async function expectStillServing(daemon: TestDaemon, pid: number, helloId: string): Promise<void> {
  expect(daemon.process.pid).to.equal(pid);
  expect(daemon.process.exitCode, `daemon exited; logs:\n${daemon.logs().slice(-4000)}`).to.equal(null);
  expect(() => process.kill(pid, 0)).not.to.throw();
  expect(await healthStatus(daemon)).to.equal("SERVING");
  const client = connect(`unix://${daemon.socketPath}`, FRESH_CONNECTION);
  try {
    const response = await client.execute({ target: moduleTarget(helloId) });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.stdout.toString()).to.equal("ok\n");
  } finally {
    client.close();
  }
}

/**
 * Registers the hooks every red-team suite shares: after each attack the daemon must have
 * survived (see expectStillServing); after all, it is stopped and `cleanup` runs.
 * `current` reads the suite's daemon, pid and hello module, set by its own before-all hook.
 */
export function checkSurvivalAfterEach(
  current: () => { daemon: TestDaemon | undefined; pid: number; helloId: string },
  cleanup?: () => Promise<void>,
): void {
  afterEach(async function () {
    const { daemon, pid, helloId } = current();
    await expectStillServing(daemon!, pid, helloId);
  });
  after(async function () {
    await current().daemon?.stop();
    await cleanup?.();
  });
}
