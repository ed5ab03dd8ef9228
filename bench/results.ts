/**
 * The figures one benchmark run produces, with their goals, and how they are
 * written: a markdown table on stdout and bench/results.json.
 */
import { cpus, release, totalmem } from "node:os";
import type { Summary } from "./stats.js";

/** Unit of a figure; "×" is a ratio of two p50s. */
export type Unit = "ms" | "µs" | "runs/s" | "calls/s" | "MB/s" | "MB" | "×";

/** A goal from issue 6: printed beside the figure, never asserted. */
export interface Goal {
  readonly op: "<=" | ">=";
  readonly value: number;
}

/** One reported figure. */
export interface Figure {
  /** Stable key, e.g. `execute.c1.latency`. */
  readonly id: string;
  /** The section number (1-6) it answers. */
  readonly section: number;
  readonly label: string;
  readonly unit: Unit;
  /** Headline value: a p50 for sampled figures, else the figure itself; undefined when not measured. */
  readonly value: number | undefined;
  /** The samples behind the value, when there are several. */
  readonly summary?: Summary;
  readonly goal?: Goal;
  /** Context: what the figure is relative to, how it was measured. */
  readonly note?: string;
  /** Why the figure could not be measured here (then value is undefined). */
  readonly na?: string;
}

/** Everything results.json holds. */
export interface BenchResults {
  readonly date: string;
  readonly mode: "full" | "quick";
  readonly machine: { readonly cpuModel: string; readonly cores: number; readonly memoryMB: number; readonly kernel: string };
  readonly node: string;
  readonly rustc: string;
  readonly durationS: number;
  readonly figures: readonly Figure[];
}

/** Machine description for results.json. */
export function describeMachine(): BenchResults["machine"] {
  const all = cpus();
  return {
    cpuModel: all[0]?.model ?? "unknown",
    cores: all.length,
    memoryMB: Math.round(totalmem() / 2 ** 20),
    kernel: release(),
  };
}

/** True/false when the figure has a goal and a value, else undefined. */
export function meetsGoal(figure: Figure): boolean | undefined {
  if (!figure.goal || figure.value === undefined || Number.isNaN(figure.value)) return undefined;
  return figure.goal.op === "<=" ? figure.value <= figure.goal.value : figure.value >= figure.goal.value;
}

/** How many times worse than its goal a figure is (1 = on the goal, < 1 = better); undefined without a goal. */
export function missFactor(figure: Figure): number | undefined {
  if (!figure.goal || figure.value === undefined || Number.isNaN(figure.value)) return undefined;
  // A "no drift" goal of 0 MB cannot be a divisor: measure its miss against 1 MB.
  const goal = figure.goal.value === 0 ? 1 : figure.goal.value;
  return figure.goal.op === "<=" ? figure.value / goal : goal / Math.max(figure.value, Number.EPSILON);
}

/** A number with a precision that suits its size. */
export function formatNumber(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return "—";
  const abs = Math.abs(v);
  if (abs >= 1000) return Math.round(v).toLocaleString("en-US");
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** The markdown table of a run: one row per figure, goals and misses beside them. */
export function markdownTable(results: BenchResults): string {
  const lines = [
    `sandboxd bench (${results.mode}) — ${results.date} — ${results.machine.cpuModel}, ${results.machine.cores} cores — ` +
      `Node ${results.node} — ${results.rustc.split("\n")[0] ?? results.rustc} — ${results.durationS.toFixed(0)} s`,
    "",
    "| § | figure | N | p50 / value | p90 | p99 | unit | goal | met | notes |",
    "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
  ];
  for (const f of results.figures) {
    const met = meetsGoal(f);
    const goal = f.goal ? `${f.goal.op === "<=" ? "≤" : "≥"} ${formatNumber(f.goal.value)}` : "";
    const metText = met === undefined ? "" : met ? "yes" : `**no** (${formatNumber(missFactor(f))}× off)`;
    const value = f.na !== undefined ? "n/a" : formatNumber(f.value);
    const notes = [f.note, f.na !== undefined ? `n/a: ${f.na}` : undefined].filter(Boolean).join("; ");
    lines.push(
      `| ${f.section} | ${cell(f.label)} | ${f.summary?.n ?? (f.value === undefined ? "" : 1)} | ${value} | ` +
        `${formatNumber(f.summary?.p90)} | ${formatNumber(f.summary?.p99)} | ${f.unit} | ${goal} | ${metText} | ${cell(notes)} |`,
    );
  }
  return lines.join("\n");
}
