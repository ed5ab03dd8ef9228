import { readFileSync } from "node:fs";
import { expect } from "chai";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { MAX_ARGS, MAX_ARGS_BYTES, MAX_ENV_BYTES, MAX_ENV_VARS } from "../../src/limits.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, expectStillServing, helloWasm, register } from "../helpers/hostile.js";
import { rawSandboxClient, type RawAnswer } from "../helpers/raw-grpc.js";

const Status = { INVALID_ARGUMENT: 3 } as const;
const MIB = 1024 * 1024;

/** Prints argc, the total bytes of argv and the number of env vars: enough to see what arrived. */
const ARGS_ENV_GUEST = `fn main() { let a: usize = std::env::args().map(|s| s.len()).sum(); println!("{} {} {}", std::env::args().count(), a, std::env::vars().count()); }`;

/** The ExecuteRequest prefix `module_id = <id>` (field 1), to which the tests append raw repeated fields. */
function moduleIdField(moduleId: string): Buffer {
  return Buffer.concat([Buffer.from([0x0a, moduleId.length]), Buffer.from(moduleId)]);
}

/** `count` empty args (field 4): two bytes each on the wire, and one V8 array slot each once decoded. */
function emptyArgs(count: number): Buffer {
  const bytes = Buffer.alloc(count * 2);
  for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x22;
  return bytes;
}

/** `count` two-letter args: four bytes each on the wire, one V8 string each once decoded. */
function twoLetterArgs(count: number): Buffer {
  const bytes = Buffer.alloc(count * 4);
  for (let i = 0; i < count; i++) bytes.set([0x22, 2, 0x61 + (i % 26), 0x61 + (Math.floor(i / 26) % 26)], i * 4);
  return bytes;
}

/** `count` env entries (field 5) with distinct six-character keys and empty values: 12 bytes each. */
function distinctEnv(count: number): Buffer {
  const bytes = Buffer.alloc(count * 12);
  for (let i = 0; i < count; i++) {
    bytes.set([0x2a, 10, 0x0a, 6], i * 12);
    bytes.write(i.toString(36).padStart(6, "0"), i * 12 + 4, "latin1");
    bytes.set([0x12, 0], i * 12 + 10);
  }
  return bytes;
}

/** The daemon's peak resident set so far (VmHWM), in bytes. */
function peakRssBytes(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match![1]) * 1024;
}

/**
 * Floods of tiny entries, each against a fresh daemon so that its peak RSS
 * (VmHWM) shows what this one request cost: the message itself is 120 MB;
 * decoded, it would be hundreds of MB to GBs more.
 */
describe("floods of tiny args and env entries against a real daemon", function () {
  this.timeout(180_000);
  /** Peak RSS growth a refused flood may cause: the 120 MB message, buffered and reassembled by grpc-js. */
  const MAX_GROWTH_MIB = 400;
  /** Time to refuse a flood: sending 120 MB takes seconds; decoding it took the daemon 30 s to minutes. */
  const MAX_REFUSAL_MS = 15_000;
  let daemon: TestDaemon | undefined;

  afterEach(async function () {
    await daemon?.stop();
    daemon = undefined;
  });

  /**
   * Sends `fields` (after a module_id, except to Compile) to a fresh daemon; checks the refusal, that it
   * came in seconds (the event loop was not spent decoding), the survival, and the peak RSS growth.
   */
  async function flood(fields: Buffer, reason: string, method: "execute" | "streamOutput" | "compile" = "execute"): Promise<RawAnswer> {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "1"] });
    const pid = daemon.process.pid!;
    const helloId = await register(daemon, helloWasm());
    const raw = rawSandboxClient(daemon.socketPath);
    try {
      const before = peakRssBytes(pid);
      const message = method === "compile" ? fields : Buffer.concat([moduleIdField(helloId), fields]);
      const sent = Date.now();
      const r = await raw[method](message);
      expect(r, JSON.stringify(r)).to.include({ code: Status.INVALID_ARGUMENT, reason });
      expect(Date.now() - sent, "time to the refusal (ms)").to.be.below(MAX_REFUSAL_MS);
      await expectStillServing(daemon, pid, helloId);
      const grownMiB = (peakRssBytes(pid) - before) / MIB;
      expect(grownMiB, `peak RSS grew by ${grownMiB.toFixed(0)} MiB`).to.be.below(MAX_GROWTH_MIB);
      return r;
    } finally {
      raw.close();
    }
  }

  it("60 million empty args (120 MB, under the message limit) are ARGS_TOO_LARGE, not a daemon killed by heap exhaustion", async function () {
    const r = await flood(emptyArgs(60_000_000), "ARGS_TOO_LARGE");
    expect(r.details).to.contain(`more than ${MAX_ARGS} args`);
  });

  it("30 million two-letter args are refused before the decoder turns them into 30 million strings", async function () {
    await flood(twoLetterArgs(30_000_000), "ARGS_TOO_LARGE");
  });

  it("10 million distinct env vars are ENV_TOO_LARGE before the decoder builds a map of them", async function () {
    const r = await flood(distinctEnv(10_000_000), "ENV_TOO_LARGE");
    expect(r.details).to.contain(`more than ${MAX_ENV_VARS} env vars`);
  });

  it("StreamOutput is refused the same way", async function () {
    await flood(emptyArgs(60_000_000), "ARGS_TOO_LARGE", "streamOutput");
  });

  it("60 million empty stdin fields (a Buffer each to the decoder) are INVALID_REQUEST, not a minute of blocked event loop", async function () {
    const stdin = Buffer.alloc(120_000_000);
    for (let i = 0; i < stdin.length; i += 2) stdin[i] = 0x1a;
    const r = await flood(stdin, "INVALID_REQUEST");
    expect(r.details).to.contain("protobuf fields");
  });

  it("Compile: 60 million unknown fields are INVALID_REQUEST before decoding", async function () {
    const unknown = Buffer.alloc(120_000_000);
    for (let i = 0; i < unknown.length; i += 2) unknown[i] = 0x78;
    await flood(unknown, "INVALID_REQUEST", "compile");
  });
});

/** Client-controlled repeated and map fields are capped, and refused before any work is done. */
describe("args and env caps against a real daemon", function () {
  this.timeout(180_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;
  let guestId: string;

  before(async function () {
    daemon = await startDaemon({ args: ["--allow-unsigned", "--workers", "2"] });
    pid = daemon.process.pid!;
    helloId = await register(daemon, helloWasm());
    const compiled = await daemon.compile({ input: { $case: "source", value: ARGS_ENV_GUEST } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    guestId = compiled.moduleId;
  });
  checkSurvivalAfterEach(() => ({ daemon, pid, helloId }));

  it("exactly MAX_ARGS args and MAX_ENV_VARS env vars reach the guest; one more of either is refused", async function () {
    const args = Array.from({ length: MAX_ARGS }, () => "a");
    const env = new Map(Array.from({ length: MAX_ENV_VARS }, (_, i) => [`K${i}`, ""] as const));
    const ok = await daemon.execute({ target: moduleTarget(guestId), args, env });
    expect(ok.outcome, ok.message).to.equal(Outcome.OUTCOME_EXITED);
    // The guest's argv also has argv[0] (the module name), which the cap does not count.
    expect(ok.stdout.toString()).to.equal(`${MAX_ARGS + 1} ${`${guestId}.wasm`.length + MAX_ARGS} ${MAX_ENV_VARS}\n`);
    const tooManyArgs = await rejection(daemon.execute({ target: moduleTarget(guestId), args: [...args, "a"] }));
    expect(tooManyArgs).to.include({ code: Status.INVALID_ARGUMENT, reason: "ARGS_TOO_LARGE" });
    const tooManyVars = await rejection(daemon.execute({ target: moduleTarget(guestId), env: new Map([...env, ["ONE_MORE", ""]]) }));
    expect(tooManyVars).to.include({ code: Status.INVALID_ARGUMENT, reason: "ENV_TOO_LARGE" });
  });

  it("args and env totalling exactly their byte caps run; one byte more is refused", async function () {
    const args = ["x".repeat(MAX_ARGS_BYTES / 2), "y".repeat(MAX_ARGS_BYTES / 2)];
    const env = new Map([["BIG", "v".repeat(MAX_ENV_BYTES - 3)]]);
    const ok = await daemon.execute({ target: moduleTarget(guestId), args, env });
    expect(ok.outcome, ok.message).to.equal(Outcome.OUTCOME_EXITED);
    const bigArgs = await rejection(daemon.execute({ target: moduleTarget(guestId), args: [...args, "z"] }));
    expect(bigArgs).to.include({ code: Status.INVALID_ARGUMENT, reason: "ARGS_TOO_LARGE" });
    expect(bigArgs.details).to.contain(`more than ${MAX_ARGS_BYTES} bytes`);
    const bigEnv = await rejection(
      daemon.execute({ target: moduleTarget(guestId), env: new Map([["BIG", "v".repeat(MAX_ENV_BYTES - 2)]]) }),
    );
    expect(bigEnv).to.include({ code: Status.INVALID_ARGUMENT, reason: "ENV_TOO_LARGE" });
    expect(bigEnv.details).to.contain(`more than ${MAX_ENV_BYTES} bytes`);
  });
});

describe("args and env caps come before any other work", function () {
  this.timeout(120_000);

  it("refuses too many args before checking the policy or compiling the source", async function () {
    // This daemon requires signed policies, and the source does not compile: neither is what the caller hears.
    const daemon = await startDaemon({ args: ["--workers", "1"] });
    try {
      const r = await rejection(
        daemon.execute({ target: sourceTarget("fn main() { nope }"), args: Array.from({ length: MAX_ARGS + 1 }, () => "") }),
      );
      expect(r).to.include({ code: Status.INVALID_ARGUMENT, reason: "ARGS_TOO_LARGE" });
      const e = await rejection(
        daemon.execute({ target: sourceTarget("fn main() { nope }"), env: new Map([["K", "v".repeat(MAX_ENV_BYTES)]]) }),
      );
      expect(e).to.include({ code: Status.INVALID_ARGUMENT, reason: "ENV_TOO_LARGE" });
      expect(daemon.logs()).to.not.contain('"message":"compile"');
    } finally {
      await daemon.stop();
    }
  });

  it("the operator sets the caps: --max-args, --max-args-bytes, --max-env-vars, --max-env-bytes", async function () {
    const daemon = await startDaemon({
      args: [
        "--allow-unsigned",
        "--workers",
        "1",
        "--max-args",
        "2",
        "--max-args-bytes",
        "8",
        "--max-env-vars",
        "1",
        "--max-env-bytes",
        "4",
      ],
    });
    try {
      const helloId = await register(daemon, helloWasm());
      const target = moduleTarget(helloId);
      expect((await daemon.execute({ target, args: ["abcd", "efgh"], env: new Map([["AB", "CD"]]) })).outcome).to.equal(
        Outcome.OUTCOME_EXITED,
      );
      expect(await rejection(daemon.execute({ target, args: ["a", "b", "c"] }))).to.include({ reason: "ARGS_TOO_LARGE" });
      expect(await rejection(daemon.execute({ target, args: ["abcde", "efgh"] }))).to.include({ reason: "ARGS_TOO_LARGE" });
      expect(
        await rejection(
          daemon.execute({
            target,
            env: new Map([
              ["A", ""],
              ["B", ""],
            ]),
          }),
        ),
      ).to.include({ reason: "ENV_TOO_LARGE" });
      expect(await rejection(daemon.execute({ target, env: new Map([["AB", "CDE"]]) }))).to.include({ reason: "ENV_TOO_LARGE" });
      // The wire check uses the operator's caps too, not the defaults.
      const raw = rawSandboxClient(daemon.socketPath);
      try {
        expect(await raw.execute(Buffer.concat([moduleIdField(helloId), emptyArgs(3)]))).to.include({ reason: "ARGS_TOO_LARGE" });
      } finally {
        raw.close();
      }
    } finally {
      await daemon.stop();
    }
  });
});
