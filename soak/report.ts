/**
 * What a soak reports: per-kind calls, outcomes, verdicts and latency, the
 * daemon's resources before and after, and the invariants; printed as markdown
 * tables and written as soak/results.json.
 */
import { describeMachine, type BenchResults } from "../bench/results.js";
import { summarize } from "../bench/stats.js";
import type { InvariantResult } from "./invariants.js";
import type { Verdict } from "./kinds.js";
import type { ProcessSample } from "./probes.js";

/** How one call ended, as recorded. `lost` = no answer within the hang limit. */
export type RecordedVerdict = Verdict | "lost";

/** One call of the soak. */
export interface CallRecord {
  readonly kind: string;
  readonly seq: number;
  readonly lane: number;
  readonly label: string;
  readonly verdict: RecordedVerdict;
  readonly latencyMs: number;
  readonly detail?: string;
}

/** Per-kind totals. */
export interface KindSummary {
  readonly kind: string;
  readonly calls: number;
  /** Calls per label (outcome or status). */
  readonly outcomes: Readonly<Record<string, number>>;
  readonly verdicts: Readonly<Record<RecordedVerdict, number>>;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** Everything results.json holds. */
export interface SoakResults {
  readonly date: string;
  readonly mode: "full" | "quick";
  readonly seed: number;
  readonly concurrency: number;
  /** Length of the load phase, and of the whole run, in seconds. */
  readonly loadS: number;
  readonly totalS: number;
  readonly node: string;
  readonly machine: BenchResults["machine"];
  readonly daemonPid: number;
  /** How the daemon died, if it did. */
  readonly daemonDeath: string | undefined;
  readonly kinds: readonly KindSummary[];
  readonly totals: Readonly<Record<RecordedVerdict, number>> & { readonly calls: number };
  readonly process: {
    readonly baseline: ProcessSample;
    readonly end: ProcessSample | undefined;
    readonly maxRssMiB: number;
    readonly rssDriftMiB: number;
    readonly rssSamplesMiB: readonly number[];
  };
  readonly invariants: readonly InvariantResult[];
  /** The calls that were not ok (the first ones, with why). */
  readonly problems: readonly CallRecord[];
}

/** Problems kept in results.json (the table counts all of them). */
const MAX_PROBLEMS_REPORTED = 100;

function emptyVerdicts(): Record<RecordedVerdict, number> {
  return { ok: 0, "wrong-output": 0, unexpected: 0, lost: 0 };
}

/** Totals per kind, in the order the kinds are listed. */
export function summarizeKinds(kindNames: readonly string[], records: readonly CallRecord[]): KindSummary[] {
  return kindNames.map((kind) => {
    const mine = records.filter((r) => r.kind === kind);
    const outcomes: Record<string, number> = {};
    const verdicts = emptyVerdicts();
    for (const r of mine) {
      outcomes[r.label] = (outcomes[r.label] ?? 0) + 1;
      verdicts[r.verdict]++;
    }
    const latency = summarize(mine.filter((r) => r.verdict !== "lost").map((r) => r.latencyMs));
    return { kind, calls: mine.length, outcomes, verdicts, p50Ms: latency.p50, p99Ms: latency.p99 };
  });
}

/** Assembles results.json from a finished soak. */
export function buildResults(
  input: Omit<SoakResults, "date" | "node" | "machine" | "kinds" | "totals" | "problems"> & {
    readonly kindNames: readonly string[];
    readonly records: readonly CallRecord[];
  },
): SoakResults {
  const { kindNames, records, ...rest } = input;
  const totals = { ...emptyVerdicts(), calls: records.length };
  for (const r of records) totals[r.verdict]++;
  return {
    ...rest,
    date: new Date().toISOString(),
    node: process.version,
    machine: describeMachine(),
    kinds: summarizeKinds(kindNames, records),
    totals,
    problems: records.filter((r) => r.verdict !== "ok").slice(0, MAX_PROBLEMS_REPORTED),
  };
}

function ms(n: number): string {
  if (Number.isNaN(n)) return "–";
  return n < 10 ? n.toFixed(1) : n.toFixed(0);
}

/** The markdown tables printed at the end of a soak. */
export function markdownReport(r: SoakResults): string {
  const lines: string[] = [];
  lines.push(
    `## sandboxd soak: ${r.mode}, seed ${r.seed}, concurrency ${r.concurrency}, load ${r.loadS.toFixed(0)} s (${r.totalS.toFixed(0)} s in all), ${r.machine.cores} cores, node ${r.node}`,
    "",
    "| kind | calls | outcomes | ok | wrong output | unexpected | lost | p50 ms | p99 ms |",
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const k of r.kinds) {
    const outcomes = Object.entries(k.outcomes)
      .sort((a, b) => b[1] - a[1])
      .map(([label, n]) => `${label} ×${n}`)
      .join(", ");
    lines.push(
      `| ${k.kind} | ${k.calls} | ${outcomes || "–"} | ${k.verdicts.ok} | ${k.verdicts["wrong-output"]} | ${k.verdicts.unexpected} | ${k.verdicts.lost} | ${ms(k.p50Ms)} | ${ms(k.p99Ms)} |`,
    );
  }
  const t = r.totals;
  lines.push(`| **all** | ${t.calls} | | ${t.ok} | ${t["wrong-output"]} | ${t.unexpected} | ${t.lost} | | |`, "");
  const p = r.process;
  const end = p.end;
  lines.push(
    "| daemon | baseline | end (settled) |",
    "| --- | ---: | ---: |",
    `| open fds | ${p.baseline.fds} | ${end?.fds ?? "–"} |`,
    `| threads | ${p.baseline.threads} | ${end?.threads ?? "–"} |`,
    `| RSS MiB | ${p.baseline.rssMiB.toFixed(0)} | ${end ? end.rssMiB.toFixed(0) : "–"} (max ${p.maxRssMiB.toFixed(0)}, second-half drift ${p.rssDriftMiB >= 0 ? "+" : ""}${p.rssDriftMiB.toFixed(1)}) |`,
    "",
    "| invariant | holds | seen |",
    "| --- | --- | --- |",
  );
  for (const i of r.invariants) lines.push(`| ${i.name} | ${i.ok ? "yes" : "**NO**"} | ${i.detail.replace(/\|/g, "\\|")} |`);
  if (r.daemonDeath) lines.push("", `**The daemon died: ${r.daemonDeath}**`);
  return lines.join("\n");
}
