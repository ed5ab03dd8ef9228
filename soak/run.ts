/**
 * `npm run soak`: drives a real daemon with a seeded mix of hostile and normal
 * calls, prints a table, writes soak/results.json, and exits non-zero when an
 * invariant fails (see "Soak and fuzzing" in the README).
 */
import { randomInt } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { REPO_ROOT } from "../bench/rustc-baseline.js";
import { parseSoakArgs, USAGE } from "./options.js";
import { markdownReport } from "./report.js";
import { runSoak } from "./soak.js";

function log(message: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

async function main(): Promise<void> {
  const options = parseSoakArgs(process.argv.slice(2), path.join(REPO_ROOT, "soak", "results.json"), () => randomInt(2 ** 32));
  if (options instanceof Error) {
    process.stderr.write(options.message === "help" ? USAGE : `soak: ${options.message}\n\n${USAGE}`);
    process.exitCode = options.message === "help" ? 0 : 2;
    return;
  }
  const results = await runSoak(options, log);
  await mkdir(path.dirname(options.out), { recursive: true });
  await writeFile(options.out, JSON.stringify(results, null, 2) + "\n");
  process.stdout.write(markdownReport(results) + "\n");
  const failed = results.invariants.filter((i) => !i.ok);
  log(`wrote ${options.out}`);
  if (failed.length > 0) {
    log(`FAILED: ${failed.map((i) => i.name).join("; ")} (replay with --seed ${results.seed})`);
    process.exitCode = 1;
  } else {
    log("all invariants hold");
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`soak failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
