import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { SERVICE_NAME } from "../../src/grpc/server.js";
import { errorInfoOf } from "../../src/grpc/status.js";
import { brokenToolchain, type BrokenPart, type BrokenToolchain } from "../helpers/broken-toolchain.js";
import { moduleTarget, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { healthStatus, helloWasm, register } from "../helpers/hostile.js";

/** The start-up probe's verdict, logged once. */
const UNAVAILABLE_LOG = "Compile is unavailable";
/** How long the probe (one rustc run of an empty program, under bubblewrap) may take on a busy machine. */
const PROBE_WAIT_MS = 60_000;

/** Polls until `check` holds (or the wait is over), so tests wait for the background probe, not a fixed sleep. */
async function eventually(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + PROBE_WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A failed call's status, message and ErrorInfo (reason and metadata). */
async function failure(
  promise: Promise<unknown>,
): Promise<{ code: number; details: string; reason: string | undefined; install: string | undefined }> {
  try {
    await promise;
  } catch (e: unknown) {
    const error = e as ServiceError;
    const info = errorInfoOf(error.metadata as Metadata | undefined);
    return { code: error.code, details: error.details, reason: info?.reason, install: info?.metadata.get("install") };
  }
  throw new Error("expected the call to fail, but it succeeded");
}

const CASES: Array<{ part: BrokenPart; install: string }> = [
  { part: "linker", install: "lld-14" },
  { part: "std", install: "libstd-rust-dev-wasm32" },
];

for (const { part, install } of CASES) {
  describe(`a daemon whose toolchain is missing its ${part} (real daemon, real rustc, hermetic probe)`, function () {
    this.timeout(120_000);
    let toolchain: BrokenToolchain;
    let daemon: TestDaemon;

    before(async function () {
      toolchain = await brokenToolchain(part);
      daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1", "--rustc", toolchain.rustc] });
      await eventually(() => daemon.logs().includes(UNAVAILABLE_LOG), "the start-up probe's verdict");
    });
    after(async function () {
      await daemon?.stop();
      await toolchain?.remove();
    });

    it(`says so once at start-up, in a log line naming ${install}`, function () {
      const lines = daemon
        .logs()
        .split("\n")
        .filter((l) => l.includes(UNAVAILABLE_LOG));
      expect(lines).to.have.length(1);
      expect(JSON.parse(lines[0]!)).to.include({ level: "error", reason: "TOOLCHAIN_MISSING", install });
    });

    it(`Health: ${SERVICE_NAME} is NOT_SERVING, the server as a whole stays SERVING`, async function () {
      await eventually(async () => (await healthStatus(daemon, SERVICE_NAME)) === "NOT_SERVING", "NOT_SERVING");
      expect(await healthStatus(daemon, "")).to.equal("SERVING");
    });

    it(`Compile is FAILED_PRECONDITION/TOOLCHAIN_MISSING naming ${install}, never rustc's own message`, async function () {
      const r = await failure(daemon.compile({ input: { $case: "source", value: 'fn main() { println!("hi"); }' } }));
      expect(r).to.include({ code: status.FAILED_PRECONDITION, reason: "TOOLCHAIN_MISSING", install });
      expect(r.details).to.contain(`install ${install}`);
      expect(r.details).to.not.match(/error(\[E\d+\])?:|not found$/);
    });

    it("Execute of source is refused the same way", async function () {
      const r = await failure(daemon.execute({ target: sourceTarget("fn main() {}") }));
      expect(r).to.include({ code: status.FAILED_PRECONDITION, reason: "TOOLCHAIN_MISSING", install });
    });

    it("precompiled modules still register and run", async function () {
      const id = await register(daemon, helloWasm());
      const r = await daemon.execute({ target: moduleTarget(id) });
      expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    });
  });
}

describe("a daemon with a working toolchain (start-up probe passes)", function () {
  this.timeout(120_000);

  it(`stays SERVING for ${SERVICE_NAME}, logs no verdict, and compiles`, async function () {
    const daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1"] });
    try {
      // Compile waits for the probe, so once it answers the verdict is in.
      const compiled = await daemon.compile({ input: { $case: "source", value: 'fn main() { println!("probe passed"); }' } });
      expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
      expect(daemon.logs()).to.not.contain(UNAVAILABLE_LOG);
      expect(await healthStatus(daemon, SERVICE_NAME)).to.equal("SERVING");
    } finally {
      await daemon.stop();
    }
  });
});
