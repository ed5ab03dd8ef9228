import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";

/** Prints every variable of its environment, sorted, one KEY=VALUE a line. */
const PRINT_ENV = `fn main() { let mut vars: Vec<(String, String)> = std::env::vars().collect(); vars.sort(); for (k, v) in vars { println!("{}={}", k, v); } }`;

/** Keys that a plain JS object treats specially: `__proto__` sets the prototype, the others shadow Object.prototype. */
const SPECIAL_KEYS = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf"] as const;

describe("the guest gets exactly the requested environment (real daemon, Rust guest)", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let moduleId: string;

  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1"] });
    const compiled = await daemon.compile({ input: { $case: "source", value: PRINT_ENV } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    moduleId = compiled.moduleId;
  });
  after(async function () {
    await daemon?.stop();
  });

  const env = new Map<string, string>([...SPECIAL_KEYS.map((k) => [k, `value of ${k}`] as [string, string]), ["PLAIN", "x"]]);
  const expected =
    [...env]
      .map(([k, v]) => `${k}=${v}`)
      .sort()
      .join("\n") + "\n";

  it("an env var named __proto__ (and constructor, toString, ...) reaches the guest over Execute", async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), env });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.stdout.toString()).to.equal(expected);
  });

  it("and over StreamOutput", async function () {
    const events = await daemon.stream({ target: moduleTarget(moduleId), env });
    const stdout = events.flatMap((e) => (e.event.event?.$case === "stdout" ? [e.event.event.value] : []));
    expect(Buffer.concat(stdout).toString()).to.equal(expected);
  });

  it("__proto__ alone is the guest's whole environment", async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), env: new Map([["__proto__", ""]]) });
    expect(r.stdout.toString()).to.equal("__proto__=\n");
  });
});
