import { expect } from "chai";
import { createLogger, silentLogger } from "../../src/logger.js";

describe("logger", () => {
  function capture(level?: string): { lines: () => Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
    const out: string[] = [];
    const logger = createLogger(level, (text) => void out.push(text));
    return {
      logger,
      lines: () =>
        out
          .join("")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    };
  }

  it("writes one JSON object per line with level, message, fields and an ISO timestamp", () => {
    const { logger, lines } = capture("info");
    logger.info("sandboxd listening on x", { address: "x", workers: 4 });
    const [record] = lines();
    expect(record).to.include({ level: "info", message: "sandboxd listening on x", address: "x", workers: 4 });
    expect(new Date(String(record!["timestamp"])).toISOString()).to.equal(record!["timestamp"]);
  });

  it("writes its level and the more severe ones only", () => {
    const { logger, lines } = capture("warn");
    logger.debug("d");
    logger.info("i");
    logger.warn("w");
    logger.error("e");
    expect(lines().map((r) => r["level"])).to.deep.equal(["warn", "error"]);
    expect(logger.isInfoEnabled()).to.equal(false);
    expect(capture("debug").logger.isInfoEnabled()).to.equal(true);
  });

  it("keeps the message when a field does not serialize", () => {
    const { logger, lines } = capture("info");
    const cycle: Record<string, unknown> = {};
    cycle["self"] = cycle;
    logger.error("broken", { cycle, big: 1n });
    expect(lines()[0]).to.include({ level: "error", message: "broken" });
    expect(lines()[0]!["logError"]).to.be.a("string");
  });

  it("a field cannot replace the level or the message", () => {
    const { logger, lines } = capture("info");
    logger.warn("real", { level: "debug", message: "forged" });
    expect(lines()[0]).to.include({ level: "warn", message: "real" });
  });

  it("the silent logger writes nothing and reports info as disabled", () => {
    const logger = silentLogger();
    expect(() => logger.error("x", { a: 1 })).not.to.throw();
    expect(logger.isInfoEnabled()).to.equal(false);
  });
});
