import { expect } from "chai";
import { readFileSync } from "node:fs";
import { Outcome, type ExecuteResponse } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import {
  buildModule,
  call,
  DROP,
  exitWithResult,
  forever,
  i32,
  i64,
  I32,
  I64,
  store32,
  store64,
  tryCatchAll,
  uleb,
  WASI,
  type ModuleShape,
} from "../fixtures/hostile/wasm-builder.js";
import { connect } from "../../src/grpc/client.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { checkSurvivalAfterEach, helloWasm, register } from "../helpers/hostile.js";

const INVALID_ARGUMENT = 3;
const EFAULT = 21;
const TIMEOUT_MS = 1500;
const MAX_OUTPUT_BYTES = 100_000;
const MEMORY_LIMIT_BYTES = 64 * 1024 * 1024;

/** Peak resident set of a process, from /proc (VmHWM, in bytes). */
function peakRssBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Hand-made hostile modules uploaded through Compile{wasm} to a real daemon. After each
 * attack the daemon must be the same live process, SERVING, and able to run a normal guest.
 */
describe("hostile hand-made wasm against a real daemon", function () {
  this.timeout(120_000);
  let daemon: TestDaemon;
  let pid: number;
  let helloId: string;

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
  });
  checkSurvivalAfterEach(() => ({ daemon, pid, helloId }));

  async function run(shape: ModuleShape): Promise<ExecuteResponse> {
    return daemon.execute({ target: moduleTarget(await register(daemon, buildModule(shape))) });
  }

  /** `_start` = call import 0 with `args`, then proc_exit(its errno). */
  function errnoOf(imp: (typeof WASI)[keyof typeof WASI], args: number[], memoryPages = 1, setup: number[] = []): ModuleShape {
    const start = exitWithResult(args);
    return { imports: [imp, WASI.proc_exit], memory: { min: memoryPages }, funcs: [{ ...start, body: [...setup, ...start.body] }] };
  }

  const expectFault = (r: ExecuteResponse): void => {
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(EFAULT);
  };

  it("fd_write with its iovec array outside memory gets EFAULT", async function () {
    expectFault(await run(errnoOf(WASI.fd_write, [...i32(1), ...i32(0xfffffff0), ...i32(1), ...i32(8)])));
  });

  it("fd_write with 2^31-1 iovecs gets EFAULT, quickly", async function () {
    expectFault(await run(errnoOf(WASI.fd_write, [...i32(1), ...i32(0), ...i32(0x7fffffff), ...i32(8)])));
  });

  it("regression: fd_write iovecs claiming 3.75 GiB from a 64 KiB memory get EFAULT and do not inflate the daemon", async function () {
    // 15 iovecs of {ptr 0, len 256 MiB}: the host once allocated (and posted to the main thread) a buffer of the claimed total.
    const setup: number[] = [];
    for (let i = 0; i < 15; i++) setup.push(...store32(64 + i * 8, 0), ...store32(68 + i * 8, 0x1000_0000));
    const before = peakRssBytes(pid);
    expectFault(await run(errnoOf(WASI.fd_write, [...i32(1), ...i32(64), ...i32(15), ...i32(8)], 1, setup)));
    expect(peakRssBytes(pid) - before).to.be.below(512 * 1024 * 1024);
  });

  it("regression: one 32 MiB write to a 100 kB stdout cap keeps exactly the cap and posts no more than it", async function () {
    const r = await run({
      imports: [WASI.fd_write],
      memory: { min: 512 },
      funcs: [
        {
          params: [],
          results: [],
          body: [...store32(0, 0), ...store32(4, 32 * 1024 * 1024), ...i32(1), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP],
        },
      ],
    });
    expect(r.outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
    expect(r.stdout.length).to.equal(MAX_OUTPUT_BYTES);
  });

  it("args_get and environ_get into memory that does not exist get EFAULT", async function () {
    expectFault(await run(errnoOf(WASI.args_get, [...i32(0xffffff00), ...i32(0xffffff00)])));
    expectFault(await run(errnoOf(WASI.environ_get, [...i32(0xffffff00), ...i32(0xffffff00)])));
  });

  it("random_get of 4 GiB gets EFAULT instead of a success that filled nothing", async function () {
    expectFault(await run(errnoOf(WASI.random_get, [...i32(0), ...i32(0xffffffff)])));
    expectFault(await run(errnoOf(WASI.random_get, [...i32(0xffff0000), ...i32(0x20000)])));
  });

  it("poll_oneoff with 10^6 subscriptions gets EFAULT when they do not fit; 10^5 that fit are served", async function () {
    expectFault(await run(errnoOf(WASI.poll_oneoff, [...i32(0), ...i32(0), ...i32(1_000_000), ...i32(16)])));
    // 80 pages of zeroes are 10^5 expired relative realtime clocks (4.8 MB); the events overwrite them once read.
    const r = await run(errnoOf(WASI.poll_oneoff, [...i32(0), ...i32(0), ...i32(100_000), ...i32(5_000_000)], 80));
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(0);
  });

  it("a poll_oneoff sleep of 10^18 ns ends at the wall-clock limit", async function () {
    // One clock subscription at 0: userdata 0, tag CLOCK, clock MONOTONIC, timeout 1e18 ns, relative.
    const setup = [...store32(16, 1), ...store64(24, 1_000_000_000_000_000_000n)];
    const started = Date.now();
    const r = await run(errnoOf(WASI.poll_oneoff, [...i32(0), ...i32(100), ...i32(1), ...i32(200)], 1, setup));
    expect(r.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
    expect(Date.now() - started).to.be.below(TIMEOUT_MS + 5_000);
  });

  it("proc_exit from three calls deep ends the run with its code", async function () {
    const r = await run({
      imports: [WASI.proc_exit],
      memory: { min: 1 },
      funcs: [
        // Function indices: 0 = proc_exit, 1 = _start, 2 = exit_with(code), 3 = inner.
        { params: [], results: [], body: [...call(3)] },
        { params: [I32], results: [], body: [0x20, 0x00, ...call(0)] }, // local.get 0; proc_exit
        { params: [], results: [], body: [...i32(7), ...call(2)] },
      ],
    });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(7);
  });

  describe("guests that catch the host's unwinding with wasm exception handling (catch_all)", function () {
    const afterText = { offset: 16, bytes: [...Buffer.from("after\n")] };
    const writeAfter = [...store32(0, 16), ...store32(4, 6), ...i32(1), ...i32(0), ...i32(1), ...i32(8), ...call(0), ...DROP];

    it('regression: an uncaught exception the guest throws is a trap saying so, not a "host error"', async function () {
      const r = await run({ memory: { min: 1 }, tags: 1, funcs: [{ params: [], results: [], body: [0x08, 0x00] }] });
      expect(r.outcome).to.equal(Outcome.OUTCOME_TRAP);
      expect(r.message).to.match(/guest threw a wasm exception/);
    });

    it("regression: catching proc_exit(3) and printing on still exits 3 with nothing printed after", async function () {
      const r = await run({
        imports: [WASI.fd_write, WASI.proc_exit],
        memory: { min: 1 },
        data: [afterText],
        funcs: [{ params: [], results: [], body: [...tryCatchAll([...i32(3), ...call(1)]), ...writeAfter] }],
      });
      expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
      expect(r.exitCode).to.equal(3);
      expect(r.stdout.toString()).to.equal("");
    });

    it("regression: catching the output-limit unwind and returning normally is still OUTCOME_OUTPUT_LIMIT, output exactly the cap", async function () {
      // block { loop { try { write "after\n" } catch_all { br 2 (out of the block) } br 0 } } ; return
      const body = [0x02, 0x40, 0x03, 0x40, 0x06, 0x40, ...writeAfter, 0x19, 0x0c, 0x02, 0x0b, 0x0c, 0x00, 0x0b, 0x0b];
      const r = await run({ imports: [WASI.fd_write], memory: { min: 1 }, data: [afterText], funcs: [{ params: [], results: [], body }] });
      expect(r.outcome).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
      expect(r.stdout.length).to.equal(MAX_OUTPUT_BYTES);
    });
  });

  it("unbounded recursion is a trap", async function () {
    const r = await run({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: [...call(0)] }] });
    expect(r.outcome).to.equal(Outcome.OUTCOME_TRAP);
    expect(r.message).to.match(/call stack/i);
  });

  it("an endless loop ends at the wall-clock limit", async function () {
    const r = await run({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([]) }] });
    expect(r.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
  });

  it("memory.grow past the cap fails inside the guest (returns -1), it never gets more", async function () {
    // grow by 2048 pages (128 MiB) with a 64 MiB cap: memory.grow returns -1, which we exit with.
    const r = await run({
      imports: [WASI.proc_exit],
      memory: { min: 1 },
      funcs: [{ params: [], results: [], body: [...i32(2048), 0x40, 0x00, ...call(0)] }],
    });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(-1);
  });

  it("regression: a funcref-table bomb (30 tables of 10^7 entries) is refused, not left to abort the daemon", async function () {
    // Tables live on the worker's V8 heap, which the memory cap does not see; overflowing it inside one
    // instantiation aborted the whole daemon process (FATAL ERROR: Reached heap limit) before the fix.
    const id = await register(
      daemon,
      buildModule({
        memory: { min: 1 },
        tables: Array.from({ length: 30 }, () => 10_000_000),
        funcs: [{ params: [], results: [], body: [] }],
      }),
    );
    const e = await rejection(daemon.execute({ target: moduleTarget(id) }));
    expect(e.code).to.equal(INVALID_ARGUMENT);
    expect(e.reason).to.equal("INVALID_WASM");
    expect(e.details).to.match(/tables/);
  });

  it("regression: table.grow by 10^7 on 100 empty tables fails inside the guest (returns -1)", async function () {
    const body: number[] = [];
    // ref.null func; i32.const 1e7; table.grow t; drop -- for every table, then exit with the first table's size.
    for (let t = 0; t < 100; t++) body.push(0xd0, 0x70, ...i32(10_000_000), 0xfc, 0x0f, ...uleb(t), ...DROP);
    body.push(0xfc, 0x10, 0x00, ...call(0)); // table.size 0; proc_exit
    const r = await run({
      imports: [WASI.proc_exit],
      memory: { min: 1 },
      tables: Array.from({ length: 100 }, () => 0),
      funcs: [{ params: [], results: [], body }],
    });
    expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
    expect(r.exitCode).to.equal(0);
  });

  describe("modules that must be refused with INVALID_ARGUMENT", function () {
    const refused = async (wasm: Uint8Array, atExecute = false): Promise<void> => {
      const compile = daemon.compile({ input: { $case: "wasm", value: Buffer.from(wasm) } });
      if (!atExecute) {
        const e = await rejection(compile);
        expect(e.code).to.equal(INVALID_ARGUMENT);
        expect(e.reason).to.equal("INVALID_WASM");
        return;
      }
      const id = (await compile).moduleId;
      const e = await rejection(daemon.execute({ target: moduleTarget(id) }));
      expect(e.code).to.equal(INVALID_ARGUMENT);
      expect(e.reason).to.equal("INVALID_WASM");
    };

    it("garbage bytes", async function () {
      await refused(Buffer.from("this is not wasm at all, just text"));
    });
    it("a truncated module", async function () {
      const hello = helloWasm();
      await refused(hello.subarray(0, hello.length - 5));
    });
    it("the magic only", async function () {
      await refused(new Uint8Array([0x00, 0x61, 0x73, 0x6d]));
    });
    it("a component (layer 1) binary", async function () {
      await refused(new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]));
    });
    it("an import outside wasi_snapshot_preview1", async function () {
      await refused(
        buildModule({
          imports: [{ module: "env", name: "system", params: [I32], results: [I32] }],
          memory: { min: 1 },
          funcs: [{ params: [], results: [], body: [] }],
        }),
      );
    });
    it("a preview1-named import that is not a preview1 function", async function () {
      await refused(
        buildModule({
          imports: [{ name: "path_open_anywhere", params: [], results: [] }],
          memory: { min: 1 },
          funcs: [{ params: [], results: [], body: [] }],
        }),
      );
    });
    it("a preview1 function imported with the wrong signature is refused, or runs to a clean outcome", async function () {
      // fd_write as (i64) -> i64: the host would be handed a BigInt where it reads a pointer.
      const wrong = { name: "fd_write", params: [I64], results: [I64] };
      const wasm = buildModule({
        imports: [wrong],
        memory: { min: 1 },
        funcs: [{ params: [], results: [], body: [...i64(1n), ...call(0), ...DROP] }],
      });
      const compiled = await daemon.compile({ input: { $case: "wasm", value: Buffer.from(wasm) } }).catch((e: unknown) => e);
      if (compiled instanceof Error) {
        expect((compiled as Error & { code: number }).code).to.equal(INVALID_ARGUMENT);
        return;
      }
      const r = await daemon.execute({ target: moduleTarget((compiled as { moduleId: string }).moduleId) });
      expect([Outcome.OUTCOME_TRAP, Outcome.OUTCOME_EXITED]).to.include(r.outcome);
    });
    it("an imported memory", async function () {
      await refused(buildModule({ memory: { min: 1, imported: true }, funcs: [{ params: [], results: [], body: [] }] }));
    });
    it("no exported memory", async function () {
      await refused(buildModule({ memory: { min: 1 }, exportMemory: false, funcs: [{ params: [], results: [], body: [] }] }));
    });
    it("an initial memory larger than the limit (refused when run under that limit)", async function () {
      await refused(buildModule({ memory: { min: 2048 }, funcs: [{ params: [], results: [], body: [] }] }), true);
    });
    it("an initial memory beyond wasm32's 4 GiB", async function () {
      await refused(buildModule({ memory: { min: 65_537 }, funcs: [{ params: [], results: [], body: [] }] }));
    });
    it("a data segment past the end of memory (fails at instantiation, as a trap)", async function () {
      const id = await register(
        daemon,
        buildModule({ memory: { min: 1 }, data: [{ offset: 65_535, bytes: [1, 2, 3] }], funcs: [{ params: [], results: [], body: [] }] }),
      );
      const r = await daemon.execute({ target: moduleTarget(id) });
      expect(r.outcome).to.equal(Outcome.OUTCOME_TRAP);
    });
  });

  it("1,100 concurrent endless Executes: the excess is RESOURCE_EXHAUSTED at once, and deadlines free the queue", async function () {
    const loopId = await register(daemon, buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([]) }] }));
    const client = connect(`unix://${daemon.socketPath}`);
    try {
      const deadline = Date.now() + 4000;
      const outcomes = await Promise.all(
        Array.from({ length: 1100 }, () =>
          client.execute({ target: moduleTarget(loopId) }, { deadline }).then(
            (r) => `outcome ${r.outcome}`,
            (e: unknown) => `code ${(e as { code: number }).code}`,
          ),
        ),
      );
      const count = (k: string): number => outcomes.filter((o) => o === k).length;
      // 2 running + 1024 queued fit; at least the rest were refused as EXECUTION_QUEUE_FULL.
      expect(count("code 8")).to.be.at.least(1100 - 2 - 1024);
      expect(count("code 8") + count("code 4") + count(`outcome ${Outcome.OUTCOME_TIMEOUT}`)).to.equal(1100);
    } finally {
      client.close();
    }
  });

  it("50 concurrent Executes, 10 of which loop forever: the other 40 all finish", async function () {
    const loopId = await register(
      daemon,
      buildModule({ memory: { min: 1 }, funcs: [{ params: [], results: [], body: forever([...i64(1n), ...DROP]) }] }),
    );
    const calls = Array.from({ length: 50 }, (_, i) => daemon.execute({ target: moduleTarget(i % 5 === 0 ? loopId : helloId) }));
    const results = await Promise.all(calls);
    results.forEach((r, i) => {
      if (i % 5 === 0) expect(r.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
      else {
        expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_EXITED);
        expect(r.stdout.toString()).to.equal("ok\n");
      }
    });
  });
});
