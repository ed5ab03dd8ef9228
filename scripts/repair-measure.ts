/**
 * Measures verified repair on the table of broken scripts (test/fixtures/repair/cases.ts) with this
 * host's rustc: for each script, whether applying MachineApplicable suggestions alone repairs it, and
 * whether also applying single-candidate MaybeIncorrect ones does; then whether each repair gives the
 * table's expected source. Compiles through the daemon's own Compiler (hermetic, with the SDK) into a
 * throwaway cache, so every compile is cold.
 *
 *   scripts/repair-measure [--json] [--show NAME]
 *
 * --show prints the repaired source of one case (to write or check the table's expectation).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { ModuleStore } from "../src/cache/module-store.js";
import { Compiler } from "../src/compiler/compiler.js";
import { repairSource, type RepairResult } from "../src/compiler/repair.js";
import { probeToolchain } from "../src/compiler/toolchain.js";
import { silentLogger } from "../src/logger.js";
import { REPAIR_CASES } from "../test/fixtures/repair/cases.js";

/** One case's figures. */
interface Row {
  readonly name: string;
  readonly mistake: string;
  readonly machineOnly: boolean;
  readonly withMaybe: boolean;
  readonly rounds: number;
  readonly matchesTable: boolean;
  readonly repairMs: number;
  readonly repaired: string | undefined;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { json: { type: "boolean", default: false }, show: { type: "string" } }, strict: true });
  const cacheDir = await mkdtemp(path.join(tmpdir(), "repair-measure-"));
  try {
    const store = await ModuleStore.open(cacheDir);
    const compiler = await Compiler.create(await probeToolchain(), store, silentLogger());
    if (compiler.unavailable) throw compiler.unavailable;
    const attempt = async (source: string, maybeIncorrect: boolean): Promise<RepairResult | undefined> => {
      const first = await compiler.compile(source);
      return repairSource(source, first, (s, signal) => compiler.compile(s, signal), undefined, { maybeIncorrect });
    };
    const rows: Row[] = [];
    for (const c of REPAIR_CASES.filter((x) => values.show === undefined || x.name === values.show)) {
      const machine = await attempt(`// machine-applicable only\n${c.broken}`, false);
      const started = performance.now();
      const both = await attempt(c.broken, true);
      const repairMs = performance.now() - started;
      rows.push({
        name: c.name,
        mistake: c.mistake,
        machineOnly: machine !== undefined,
        withMaybe: both !== undefined,
        rounds: both?.rounds ?? 0,
        matchesTable: both?.source === c.repaired,
        repairMs,
        repaired: both?.source,
      });
      process.stderr.write(".");
    }
    process.stderr.write("\n");
    if (values.show !== undefined) {
      process.stdout.write(rows[0]?.repaired ?? "(no repair)\n");
      return 0;
    }
    const n = rows.length;
    const machine = rows.filter((r) => r.machineOnly).length;
    const maybe = rows.filter((r) => r.withMaybe).length;
    if (values.json) {
      process.stdout.write(JSON.stringify({ cases: n, machineOnly: machine, withMaybeIncorrect: maybe, rows }, null, 2) + "\n");
      return 0;
    }
    const yes = (b: boolean): string => (b ? "yes" : "no");
    process.stdout.write(
      "| case | mistake | MachineApplicable only | + single-candidate MaybeIncorrect | rounds | as the table expects |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for (const r of rows)
      process.stdout.write(
        `| ${r.name} | ${r.mistake} | ${yes(r.machineOnly)} | ${yes(r.withMaybe)} | ${r.rounds} | ${yes(r.matchesTable)} |\n`,
      );
    const pct = (k: number): string => `${k}/${n} (${Math.round((100 * k) / n)} %)`;
    process.stdout.write(`\nrepaired: MachineApplicable only ${pct(machine)}; with single-candidate MaybeIncorrect ${pct(maybe)}\n`);
    return rows.every((r) => r.matchesTable) ? 0 : 1;
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`repair-measure: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
