/**
 * Reads V8 `.cpuprofile` files (node --cpu-prof) and ranks functions by self
 * time, so `--profile` can print what the daemon spends its time on.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

/** One function's share of a profile. */
export interface SelfTime {
  readonly functionName: string;
  /** Script URL and 1-based line, e.g. `file:///…/host.js:120`. */
  readonly location: string;
  readonly selfMs: number;
  /** Share of all sampled time in this profile, 0..100. */
  readonly percent: number;
}

/** Top self-time functions of one profile file. */
export interface ProfileSummary {
  readonly file: string;
  readonly totalMs: number;
  readonly top: readonly SelfTime[];
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function isCpuProfile(v: unknown): v is CpuProfile {
  const p = v as Partial<CpuProfile> | null;
  return typeof p === "object" && p !== null && Array.isArray(p.nodes) && Array.isArray(p.samples) && Array.isArray(p.timeDeltas);
}

/** Ranks the functions of one parsed profile by self time (µs deltas are attributed to the sampled node). */
export function summarizeProfile(profile: unknown, file: string, topN: number): ProfileSummary {
  if (!isCpuProfile(profile)) throw new Error(`${file} is not a V8 CPU profile`);
  const byNode = new Map<number, CpuProfileNode>(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, { functionName: string; location: string; us: number }>();
  let totalUs = 0;
  profile.samples.forEach((nodeId, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    const node = byNode.get(nodeId);
    if (!node) return;
    totalUs += delta;
    const frame = node.callFrame;
    const location = frame.url === "" ? "(native)" : `${frame.url}:${frame.lineNumber + 1}`;
    const functionName = frame.functionName === "" ? "(anonymous)" : frame.functionName;
    const key = `${functionName}@${location}`;
    const entry = selfUs.get(key) ?? { functionName, location, us: 0 };
    entry.us += delta;
    selfUs.set(key, entry);
  });
  const top = [...selfUs.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({
      functionName: e.functionName,
      location: e.location,
      selfMs: e.us / 1000,
      percent: totalUs === 0 ? 0 : (100 * e.us) / totalUs,
    }));
  return { file, totalMs: totalUs / 1000, top };
}

/** Summarises every `.cpuprofile` in `dir` (one per thread: the daemon's main thread and each worker). */
export async function summarizeProfileDir(dir: string, topN: number): Promise<ProfileSummary[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".cpuprofile")).sort();
  const summaries: ProfileSummary[] = [];
  for (const f of files) {
    const file = path.join(dir, f);
    summaries.push(summarizeProfile(JSON.parse(await readFile(file, "utf8")), file, topN));
  }
  return summaries;
}

/** Markdown rendering of profile summaries, busiest thread first. */
export function formatProfiles(summaries: readonly ProfileSummary[]): string {
  const lines: string[] = [];
  for (const s of [...summaries].sort((a, b) => b.totalMs - a.totalMs)) {
    lines.push(
      `\n${path.basename(s.file)} — ${s.totalMs.toFixed(0)} ms sampled`,
      "",
      "| self ms | % | function | location |",
      "| ---: | ---: | --- | --- |",
    );
    for (const t of s.top) {
      lines.push(`| ${t.selfMs.toFixed(1)} | ${t.percent.toFixed(1)} | ${t.functionName} | ${t.location} |`);
    }
  }
  return lines.join("\n");
}
