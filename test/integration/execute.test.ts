import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";

describe("Execute (real daemon, real rustc, our WASI host)", function () {
  let daemon: TestDaemon;

  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "2", "--default-timeout-ms", "3000"] });
  });
  after(async function () {
    await daemon?.stop();
  });

  async function compiled(name: string): Promise<string> {
    const response = await daemon.compile({ input: { $case: "source", value: script(name) } });
    expect(response.ok, JSON.stringify(response.diagnostics)).to.equal(true);
    return response.moduleId;
  }

  it("feeds stdin JSON, args and env to the guest and returns its JSON stdout", async function () {
    const moduleId = await compiled("echo_json");
    const response = await daemon.execute({
      target: moduleTarget(moduleId),
      stdin: Buffer.from('{"task":"sum","values":[1,2,3]}'),
      args: ["--fast", "two words"],
      env: new Map([["GREETING", "hi"]]),
    });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(0);
    expect(JSON.parse(response.stdout.toString())).to.deep.equal({
      input: { task: "sum", values: [1, 2, 3] },
      args: ["--fast", "two words"],
      greeting: "hi",
    });
    expect(response.moduleId).to.equal(moduleId);
  });

  it("never shows the guest the daemon's environment", async function () {
    const moduleId = await compiled("echo_json");
    // GREETING is unset in the request; the daemon's own env has PATH, HOME, ...
    const response = await daemon.execute({ target: moduleTarget(moduleId), stdin: Buffer.from("null") });
    expect(JSON.parse(response.stdout.toString()).greeting).to.equal("");
  });

  it("preserves an exact exit code (42)", async function () {
    const response = await daemon.execute({ target: moduleTarget(await compiled("exit_42")) });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(42);
    expect(response.stdout.toString()).to.equal("about to exit\n");
  });

  it("reports exit(-1) as -1, not as the u32 proc_exit carries", async function () {
    const response = await daemon.execute({ target: sourceTarget("fn main() { std::process::exit(-1); }\n") });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(-1);
  });

  it("reports a panic as exit code 101 (as native Rust) with the panic message on stderr", async function () {
    const response = await daemon.execute({ target: moduleTarget(await compiled("panic")) });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(101);
    expect(response.stderr.toString()).to.contain("deliberate panic: the sky is falling");
  });

  it("reports a wasm trap (abort → unreachable) as OUTCOME_TRAP with the engine's message", async function () {
    const response = await daemon.execute({ target: moduleTarget(await compiled("unreachable")) });
    expect(response.outcome).to.equal(Outcome.OUTCOME_TRAP);
    expect(response.message).to.match(/unreachable/i);
  });

  it("compiles and runs `source` targets in one call", async function () {
    const response = await daemon.execute({ target: sourceTarget(script("exit_42")) });
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(42);
    expect(response.moduleId).to.match(/^[0-9a-f]{64}$/);
  });

  it("returns OUTCOME_COMPILE_ERROR with diagnostics for a `source` target that does not compile", async function () {
    const response = await daemon.execute({ target: sourceTarget('fn main() { let x: u8 = "no"; }\n') });
    expect(response.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
    expect(response.diagnostics.map((d) => d.code)).to.include("E0308");
  });

  it("times out an infinite loop while a concurrent short run still succeeds, and keeps serving", async function () {
    this.timeout(120_000);
    const [loopId, exitId] = await Promise.all([compiled("infinite_loop"), compiled("exit_42")]);
    const looping = daemon.execute({ target: moduleTarget(loopId) });
    // The short run is issued while the loop occupies a worker.
    const short = await daemon.execute({ target: moduleTarget(exitId) });
    expect(short.exitCode).to.equal(42);
    const timedOut = await looping;
    expect(timedOut.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
    expect(timedOut.message).to.match(/wall-clock limit/);
    // The pool replaced the killed worker: both workers serve again.
    const after = await Promise.all([1, 2, 3].map(() => daemon.execute({ target: moduleTarget(exitId) })));
    expect(after.map((r) => r.exitCode)).to.deep.equal([42, 42, 42]);
  });
});
