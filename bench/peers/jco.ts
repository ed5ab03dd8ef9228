/**
 * Peer: jco + preview2-shim, in-process. The preview1 module becomes a component
 * with the command adapter shipped inside jco (`jco new`), is transpiled to JS,
 * then run in a child node process whose stdout is /dev/null (preview2-shim
 * writes guest stdout to its own process's stdout). Timing happens inside that
 * child around instantiate + run, so the figure is in-process cost.
 */
import { fork } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package names, held in variables so the bench still compiles and runs where they are not installed. */
const JCO_PACKAGE = "@bytecodealliance/jco";
/** Name the transpiled component gets (its files are `<name>.js`, `<name>.core*.wasm`). */
const COMPONENT_NAME = "guest";
/** The child that times runs (compiled next to this file). */
const CHILD_SCRIPT = fileURLToPath(new URL("./jco-child.js", import.meta.url));
/** How long the child may take for all its runs. */
const CHILD_TIMEOUT_MS = 120_000;

interface JcoApi {
  componentNew(binary: Uint8Array, adapters?: [string, Uint8Array][]): Promise<Uint8Array>;
  transpile(
    component: Uint8Array,
    opts: { name: string; instantiation: "async"; noTypescript: boolean; quiet: boolean },
  ): Promise<{ files: Record<string, Uint8Array>; imports: string[] }>;
  preview1AdapterCommandPath(): URL;
}

/** A jco measurement, or why there is none. */
export type JcoOutcome = { readonly samplesMs: number[]; readonly prepareMs: number } | { readonly na: string };

/** Message the child sends back over IPC. */
export interface JcoChildReport {
  readonly samplesMs?: number[];
  readonly error?: string;
}

/** Componentises and transpiles `wasm` into `workDir`, then times `runs` runs (after `warmup`) in a child process. */
export async function measureJco(wasm: Uint8Array, runs: number, warmup: number, workDir: string): Promise<JcoOutcome> {
  let jco: JcoApi;
  try {
    jco = (await import(JCO_PACKAGE)) as JcoApi;
  } catch (e: unknown) {
    return { na: `${JCO_PACKAGE} is not installed (${e instanceof Error ? e.message : String(e)})` };
  }
  const adapterUrl = jco.preview1AdapterCommandPath();
  if (!existsSync(adapterUrl)) return { na: `jco ships no preview1 command adapter at ${fileURLToPath(adapterUrl)}` };
  const started = performance.now();
  let imports: string[];
  try {
    const component = await jco.componentNew(wasm, [["wasi_snapshot_preview1", await readFile(adapterUrl)]]);
    const out = await jco.transpile(component, { name: COMPONENT_NAME, instantiation: "async", noTypescript: true, quiet: true });
    for (const [name, bytes] of Object.entries(out.files)) {
      if (!name.includes("/")) await writeFile(path.join(workDir, name), bytes);
    }
    imports = out.imports;
  } catch (e: unknown) {
    return { na: `jco new/transpile failed: ${e instanceof Error ? e.message : String(e)}` };
  }
  const prepareMs = performance.now() - started;
  const report = await runChild([workDir, COMPONENT_NAME, String(runs), String(warmup), JSON.stringify(imports)]);
  if (report.error !== undefined || !report.samplesMs) return { na: `jco run failed: ${report.error ?? "no samples"}` };
  return { samplesMs: report.samplesMs, prepareMs };
}

function runChild(args: string[]): Promise<JcoChildReport> {
  return new Promise((resolve) => {
    const child = fork(CHILD_SCRIPT, args, { stdio: ["ignore", "ignore", "pipe", "ipc"], timeout: CHILD_TIMEOUT_MS });
    let stderr = "";
    let report: JcoChildReport | undefined;
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("message", (m: JcoChildReport) => (report = m));
    child.on("error", (e) => resolve({ error: e.message }));
    child.on("exit", (code) => resolve(report ?? { error: `child exited with ${code}: ${stderr.slice(-2000)}` }));
  });
}
