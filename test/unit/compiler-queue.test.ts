import { expect } from "chai";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import { CompileQueue } from "../../src/compiler/compile-queue.js";
import { Singleflight } from "../../src/compiler/singleflight.js";

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

async function reasonOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e: unknown) {
    return e instanceof SandboxError ? e.reason : `not a SandboxError: ${String(e)}`;
  }
  return "resolved";
}

describe("CompileQueue", function () {
  it("runs at most `concurrency` tasks, queues up to the limit and refuses beyond it", async function () {
    const queue = new CompileQueue(1, 1);
    const gate = deferred<void>();
    const order: string[] = [];
    const first = queue.run(async () => {
      order.push("first");
      await gate.promise;
    });
    const second = queue.run(async () => {
      order.push("second");
    });
    expect(queue.load).to.deep.equal({ active: 1, queued: 1 });
    expect(await reasonOf(queue.run(async () => undefined))).to.equal("COMPILE_QUEUE_FULL");
    expect(order).to.deep.equal(["first"]);
    gate.resolve();
    await Promise.all([first, second]);
    expect(order).to.deep.equal(["first", "second"]);
    expect(queue.load).to.deep.equal({ active: 0, queued: 0 });
  });

  it("drops a queued task whose caller gives up, and frees the slot after a failure", async function () {
    const queue = new CompileQueue(1, 4);
    const gate = deferred<void>();
    const first = queue.run(async () => {
      await gate.promise;
      throw new Error("rustc blew up");
    });
    const controller = new AbortController();
    let ran = false;
    const abandoned = queue.run(async () => {
      ran = true;
    }, controller.signal);
    controller.abort();
    expect(await reasonOf(abandoned)).to.equal("CANCELLED");
    expect(queue.load.queued).to.equal(0);
    gate.resolve();
    await first.catch(() => undefined);
    expect(ran).to.equal(false);
    expect(await queue.run(async () => 42)).to.equal(42);
  });
});

describe("Singleflight", function () {
  it("runs the work once for concurrent callers of the same key", async function () {
    const flights = new Singleflight<number>();
    const gate = deferred<number>();
    let runs = 0;
    const work = async (): Promise<number> => {
      runs++;
      return gate.promise;
    };
    const calls = Array.from({ length: 8 }, () => flights.do("k", work));
    const other = flights.do("other", async () => 7);
    gate.resolve(5);
    expect(await Promise.all(calls)).to.deep.equal(Array(8).fill(5));
    expect(await other).to.equal(7);
    expect(runs).to.equal(1);
    expect(flights.size).to.equal(0);
    // a later call starts a new run
    expect(await flights.do("k", async () => 9)).to.equal(9);
  });

  it("keeps the work going while any caller still waits, and aborts it when all gave up", async function () {
    const flights = new Singleflight<string>();
    const gate = deferred<string>();
    let workSignal: AbortSignal | undefined;
    const work = async (signal: AbortSignal): Promise<string> => {
      workSignal = signal;
      return gate.promise;
    };
    const a = new AbortController();
    const b = new AbortController();
    const pa = flights.do("k", work, a.signal);
    const pb = flights.do("k", work, b.signal);
    a.abort();
    expect(await reasonOf(pa)).to.equal("CANCELLED");
    expect(workSignal?.aborted).to.equal(false);
    gate.resolve("done");
    expect(await pb).to.equal("done");

    const gate2 = deferred<string>();
    const c = new AbortController();
    const pc = flights.do(
      "k2",
      async (signal) => {
        workSignal = signal;
        return gate2.promise;
      },
      c.signal,
    );
    c.abort();
    expect(await reasonOf(pc)).to.equal("CANCELLED");
    expect(workSignal?.aborted).to.equal(true);
    gate2.resolve("late");
  });

  it("shares a failure with every caller", async function () {
    const flights = new Singleflight<number>();
    const boom = new SandboxError("COMPILE_TIMEOUT", "too slow");
    const calls = [1, 2, 3].map(() => flights.do("k", async () => Promise.reject(boom)));
    for (const c of calls) expect(await reasonOf(c)).to.equal("COMPILE_TIMEOUT");
  });
});

describe("precompiled uploads", function () {
  it("share the compile queue's bounds: past concurrency + backlog, COMPILE_QUEUE_FULL", async function () {
    const { mkdtemp, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const path = await import("node:path");
    const { Compiler } = await import("../../src/compiler/compiler.js");
    const { ModuleStore } = await import("../../src/cache/module-store.js");
    const { silentLogger } = await import("../../src/logger.js");
    const { buildModule } = await import("../fixtures/hostile/wasm-builder.js");
    const cache = await mkdtemp(path.join(tmpdir(), "sandboxd-uploads-"));
    try {
      const compiler = await Compiler.create(undefined, await ModuleStore.open(cache), silentLogger(), { concurrency: 1, maxQueued: 1 });
      // Five distinct modules at once: one validates, one waits, three are refused.
      const modules = Array.from({ length: 5 }, (_, i) =>
        buildModule({ memory: { min: 1 }, data: [{ offset: 0, bytes: [i] }], funcs: [{ params: [], results: [], body: [] }] }),
      );
      const reasons = await Promise.all(modules.map((m) => reasonOf(compiler.register(m))));
      expect(reasons.filter((r) => r === "resolved")).to.have.length(2);
      expect(reasons.filter((r) => r === "COMPILE_QUEUE_FULL")).to.have.length(3);
      // A module already stored is answered from the store without a slot.
      expect(await reasonOf(compiler.register(modules[0]!))).to.equal("resolved");
    } finally {
      await rm(cache, { recursive: true, force: true });
    }
  });
});
