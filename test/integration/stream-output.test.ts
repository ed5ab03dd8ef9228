import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";

describe("StreamOutput", function () {
  let daemon: TestDaemon;

  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  it("delivers the first chunk while the script is still running (print, sleep, print)", async function () {
    const { moduleId } = await daemon.compile({ input: { $case: "source", value: script("print_sleep_print") } });
    const events = await daemon.stream({ target: moduleTarget(moduleId) });
    const kinds = events.map((e) => e.event.event?.$case);
    expect(kinds[0]).to.equal("started");
    expect(kinds[kinds.length - 1]).to.equal("finished");
    const chunks = events.filter((e) => e.event.event?.$case === "stdout");
    const text = chunks.map((e) => (e.event.event as { value: Buffer }).value.toString()).join("");
    expect(text).to.equal("first\nsecond\n");
    const first = chunks.find((e) => (e.event.event as { value: Buffer }).value.toString().includes("first"))!;
    const finished = events[events.length - 1]!;
    // The script sleeps 1.5 s between its two lines: "first" must arrive well before the end.
    expect(finished.atMs - first.atMs).to.be.greaterThan(1000);
    const result = (finished.event.event as { value: { outcome: Outcome; stdout: Buffer; moduleId: string } }).value;
    expect(result.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(result.stdout.byteLength, "finished carries no stdout: it was streamed").to.equal(0);
    const started = events[0]!.event.event as { value: { executionId: string; moduleId: string } };
    expect(started.value.moduleId).to.equal(moduleId);
    expect(started.value.executionId).to.not.equal("");
  });

  it("streams stderr separately from stdout", async function () {
    const events = await daemon.stream({ target: sourceTarget(script("panic")) });
    const stderr = events
      .filter((e) => e.event.event?.$case === "stderr")
      .map((e) => (e.event.event as { value: Buffer }).value.toString())
      .join("");
    expect(stderr).to.contain("deliberate panic");
  });

  it("is `compiling` then a COMPILE_ERROR `finished`, with no `started`, when the source does not compile", async function () {
    const events = await daemon.stream({ target: sourceTarget("fn main() { undefined_name(); }\n") });
    expect(events.map((e) => e.event.event?.$case)).to.deep.equal(["compiling", "finished"]);
    const finished = events[1]!.event.event as { value: { outcome: Outcome } };
    expect(finished.value.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
  });
});
