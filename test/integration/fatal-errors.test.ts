import { expect } from "chai";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { FATAL_EXIT_CODE } from "../../src/cli/fatal-errors.js";
import { startDaemon } from "../helpers/daemon.js";
import { tempDir } from "../unit/policy-fixtures.js";

/** How long a daemon that must exit is given to do so (its log flush is bounded well below this). */
const EXIT_WAIT_MS = 10_000;

/**
 * A fault is injected into the real daemon from outside its code: a module Node
 * preloads (`NODE_OPTIONS=--import`) that throws, or rejects, when the test sends
 * SIGURG. The daemon's own code has no fault switch.
 */
const FAULTS = {
  "uncaught exception": `process.on("SIGURG", () => { throw new Error("injected fault: nobody catches this"); });`,
  "unhandled rejection": `process.on("SIGURG", () => { void Promise.reject(new Error("injected fault: nobody handles this")); });`,
} as const;

describe("fatal errors (real daemon process)", function () {
  for (const [kind, body] of Object.entries(FAULTS)) {
    it(`an ${kind} is logged with its stack and ends the daemon with status ${FATAL_EXIT_CODE}, not a daemon serving on from unknown state`, async function () {
      const tmp = await tempDir("fatal");
      const preload = path.join(tmp.path, "inject-fault.mjs");
      await writeFile(preload, `import { isMainThread } from "node:worker_threads";\nif (isMainThread) { ${body} }\n`);
      const daemon = await startDaemon({ env: { NODE_OPTIONS: `--import=${preload}` } });
      try {
        const exited = new Promise<number | null>((resolve) => daemon.process.once("exit", (code) => resolve(code)));
        daemon.process.kill("SIGURG");
        const code = await Promise.race([
          exited,
          new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), EXIT_WAIT_MS)),
        ]);
        expect(code, daemon.logs()).to.equal(FATAL_EXIT_CODE);
        const line = daemon
          .logs()
          .split("\n")
          .find((l) => l.includes(`"${kind}; exiting`));
        expect(line, `no fatal log line in:\n${daemon.logs()}`).to.be.a("string");
        const entry = JSON.parse(line!) as { level: string; error: string; stack?: string };
        expect(entry.level).to.equal("error");
        expect(entry.error).to.contain("injected fault");
        expect(entry.stack).to.contain("inject-fault.mjs");
      } finally {
        await daemon.stop();
        await tmp.remove();
      }
    });
  }
});
