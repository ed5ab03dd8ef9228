import { Metadata } from "@grpc/grpc-js";
import { expect } from "chai";
import { Outcome, type ExecuteEvent } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, expectStillServing, helloWasm, register } from "../helpers/hostile.js";

const TIMEOUT_MS = 5000;
const MAX_OUTPUT_BYTES = 100_000;
const MEMORY_LIMIT_BYTES = 64 * 1024 * 1024;

/** Hostile Rust guests, compiled by the daemon's own rustc, each run through a real daemon. */
const SCRIPTS = {
  vecGrowth: `fn main() { let mut v: Vec<Vec<u8>> = Vec::new(); loop { v.push(vec![1u8; 1 << 20]); } }`,
  hugeAlloc: `fn main() { let v = vec![7u8; 1_500_000_000]; println!("{}", v[v.len() - 1]); }`,
  stdoutFlood: `use std::io::Write; fn main() { let line = [b'x'; 999]; let mut out = std::io::stdout(); loop { out.write_all(&line).unwrap(); out.write_all(b"\\n").unwrap(); } }`,
  stderrFlood: `fn main() { loop { eprintln!("{}", "e".repeat(997)); } }`,
  recursion: `fn deep(n: u64) -> u64 { let pad = [n; 64]; if n == u64::MAX { 0 } else { deep(n + 1) + pad[(n % 64) as usize] } } fn main() { println!("{}", deep(0)); }`,
  argsEnv: `fn main() { let a: usize = std::env::args().map(|s| s.len()).sum(); let e = std::env::vars().count(); println!("{} {} {}", std::env::args().count(), a, e); }`,
} as const;

describe("hostile Rust guests against a real daemon", function () {
  this.timeout(300_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;
  const ids = new Map<keyof typeof SCRIPTS, string>();

  before(async function () {
    daemon = await startDaemon({
      args: [
        "--allow-unsigned",
        "--workers",
        "2",
        "--default-timeout-ms",
        String(TIMEOUT_MS),
        "--max-output-bytes",
        String(MAX_OUTPUT_BYTES),
        "--max-memory-bytes",
        String(MEMORY_LIMIT_BYTES),
      ],
    });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
    for (const [name, source] of Object.entries(SCRIPTS) as [keyof typeof SCRIPTS, string][]) {
      const compiled = await daemon.compile({ input: { $case: "source", value: source } });
      expect(compiled.ok, `${name}: ${JSON.stringify(compiled.diagnostics.map((d) => d.rendered))}`).to.equal(true);
      ids.set(name, compiled.moduleId);
    }
  });
  checkSurvivalAfterEach(() => ({ daemon, pid, helloId }));

  const exec = (name: keyof typeof SCRIPTS, extra: Parameters<TestDaemon["execute"]>[0] = {}) =>
    daemon.execute({ target: moduleTarget(ids.get(name)!), ...extra });

  it("a Vec growing without end ends as OUTCOME_MEMORY_LIMIT", async function () {
    const r = await exec("vecGrowth");
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_MEMORY_LIMIT);
  });

  it("one 1.5 GB allocation ends as OUTCOME_MEMORY_LIMIT", async function () {
    const r = await exec("hugeAlloc");
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_MEMORY_LIMIT);
  });

  it("a stdout flood ends as OUTCOME_OUTPUT_LIMIT with exactly the cap of output", async function () {
    const r = await exec("stdoutFlood");
    expect(r.outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
    expect(r.stdout.length).to.equal(MAX_OUTPUT_BYTES);
    expect(r.stdout.subarray(0, 1000).toString()).to.equal(`${"x".repeat(999)}\n`);
  });

  it("a stderr flood ends as OUTCOME_OUTPUT_LIMIT with exactly the cap of stderr", async function () {
    const r = await exec("stderrFlood");
    expect(r.outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
    expect(r.stderr.length).to.equal(MAX_OUTPUT_BYTES);
    expect(r.stdout.length).to.equal(0);
  });

  it("unbounded recursion ends as a trap", async function () {
    const r = await exec("recursion");
    expect(r.outcome).to.equal(Outcome.OUTCOME_TRAP);
    expect(r.message).to.match(/stack|unreachable|out of bounds/i);
  });

  it("8 MB of args and 20,000 env entries reach the guest intact", async function () {
    const args = Array.from({ length: 800 }, (_, i) => `${i}:`.padEnd(10_000, "a"));
    const env = new Map(Array.from({ length: 20_000 }, (_, i) => [`K${i}`, "v".repeat(100)]));
    const r = await exec("argsEnv", { args, env });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    const argv0 = `${ids.get("argsEnv")}.wasm`.length;
    expect(r.stdout.toString()).to.equal(`801 ${argv0 + 800 * 10_000} 20000\n`);
  });

  it("StreamOutput to a client that stops reading does not stall anyone else, and delivers everything once read", async function () {
    const call = daemon.client.streamOutput(executeRequest({ target: moduleTarget(ids.get("stdoutFlood")!) }), new Metadata());
    const events: ExecuteEvent[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      call.on("end", () => resolve());
      call.on("error", reject);
    });
    call.on("data", (e: ExecuteEvent) => events.push(e));
    call.pause();
    // While it is not read, others are served.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await expectStillServing(daemon, pid, helloId);
    call.resume();
    await ended;
    let stdout = 0;
    for (const e of events) if (e.event?.$case === "stdout") stdout += e.event.value.length;
    const last = events[events.length - 1]?.event;
    expect(last?.$case).to.equal("finished");
    if (last?.$case === "finished") expect(last.value.outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
    expect(stdout).to.equal(MAX_OUTPUT_BYTES);
  });

  it("StreamOutput cancelled by a client that never read ends the run and frees the worker", async function () {
    const call = daemon.client.streamOutput(executeRequest({ target: moduleTarget(ids.get("vecGrowth")!) }), new Metadata());
    call.on("error", () => undefined);
    call.pause();
    await new Promise((resolve) => setTimeout(resolve, 200));
    call.cancel();
    await expectStillServing(daemon, pid, helloId);
  });
});
