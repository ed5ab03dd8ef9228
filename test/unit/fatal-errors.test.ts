import { expect } from "chai";
import { PassThrough, Writable } from "node:stream";
import winston from "winston";
import { FATAL_EXIT_CODE, fatalErrorHandler } from "../../src/cli/fatal-errors.js";

/** A logger writing JSON lines into `output`, as the daemon's writes to stderr. */
function loggerInto(output: Writable): winston.Logger {
  return winston.createLogger({ format: winston.format.json(), transports: [new winston.transports.Stream({ stream: output })] });
}

/** Resolves with the exit code the handler asks for, or "no exit" after `ms`. */
function exitWithin(ms: number): { exit: (code: number) => void; code: Promise<number | "no exit">; calls: () => number } {
  let calls = 0;
  let resolve: (code: number) => void = () => {};
  const code = new Promise<number | "no exit">((r) => {
    resolve = r;
    setTimeout(() => r("no exit"), ms);
  });
  return {
    exit: (c) => {
      calls++;
      resolve(c);
    },
    code,
    calls: () => calls,
  };
}

describe("fatal error handler", function () {
  it("logs the fault with its stack before it exits with FATAL_EXIT_CODE", async function () {
    const output = new PassThrough();
    let written = "";
    output.on("data", (d: Buffer) => (written += d.toString()));
    const exit = exitWithin(1_000);
    let writtenAtExit = "";
    const handle = fatalErrorHandler({ logger: loggerInto(output), output, exit: (c) => ((writtenAtExit = written), exit.exit(c)) });
    handle("uncaught exception", new Error("boom"));
    expect(await exit.code).to.equal(FATAL_EXIT_CODE);
    const entry = JSON.parse(writtenAtExit.trim()) as { message: string; error: string; stack: string };
    expect(entry.message).to.contain("uncaught exception; exiting");
    expect(entry.error).to.equal("boom");
    expect(entry.stack).to.contain("fatal-errors.test");
  });

  it("describes a rejection with a non-Error reason", async function () {
    const output = new PassThrough();
    let written = "";
    output.on("data", (d: Buffer) => (written += d.toString()));
    const exit = exitWithin(1_000);
    fatalErrorHandler({ logger: loggerInto(output), output, exit: exit.exit })("unhandled rejection", 42);
    expect(await exit.code).to.equal(FATAL_EXIT_CODE);
    expect(JSON.parse(written.trim())).to.include({ error: "42" });
  });

  it("exits after the flush timeout when the log output never drains", async function () {
    // A stream whose buffer is full and never empties: as a stalled stderr pipe.
    const stalled = new Writable({ highWaterMark: 1, write: () => {} });
    stalled.write("x");
    expect(stalled.writableNeedDrain).to.equal(true);
    const exit = exitWithin(2_000);
    const started = Date.now();
    fatalErrorHandler({ logger: loggerInto(new PassThrough()), output: stalled, exit: exit.exit, flushTimeoutMs: 100 })(
      "uncaught exception",
      new Error("x"),
    );
    expect(await exit.code).to.equal(FATAL_EXIT_CODE);
    expect(Date.now() - started).to.be.within(90, 1_500);
  });

  it("a second fault while exiting is logged but does not exit twice", async function () {
    const output = new PassThrough();
    let written = "";
    output.on("data", (d: Buffer) => (written += d.toString()));
    const exit = exitWithin(1_000);
    const handle = fatalErrorHandler({ logger: loggerInto(output), output, exit: exit.exit });
    handle("uncaught exception", new Error("first"));
    handle("unhandled rejection", new Error("second"));
    expect(await exit.code).to.equal(FATAL_EXIT_CODE);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(exit.calls()).to.equal(1);
    expect(written).to.contain("first").and.to.contain("second");
  });

  it("still exits when logging itself throws", async function () {
    const logger = loggerInto(new PassThrough());
    logger.error = (() => {
      throw new Error("logger broken");
    }) as unknown as winston.LeveledLogMethod;
    const exit = exitWithin(1_000);
    fatalErrorHandler({ logger, output: new PassThrough(), exit: exit.exit })("uncaught exception", new Error("x"));
    expect(await exit.code).to.equal(FATAL_EXIT_CODE);
  });
});
