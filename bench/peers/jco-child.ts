/**
 * Child process of the jco peer (see jco.ts): imports the transpiled component,
 * wires preview2-shim, and times instantiate + `wasi:cli/run` per run.
 * Usage: jco-child.js DIR NAME RUNS WARMUP IMPORTS_JSON; reports over IPC.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { JcoChildReport } from "./jco.js";

/** Held in a variable so the bench compiles where preview2-shim is not installed. */
const SHIM_PACKAGE = "@bytecodealliance/preview2-shim";

type Instantiate = (
  getCoreModule: (name: string) => WebAssembly.Module,
  imports: Record<string, unknown>,
) => Promise<{ run: { run(): void } }>;

/** `wasi:cli/terminal-input@0.2.0` → ["cli", "terminalInput"]. */
function shimPath(specifier: string): [string, string] {
  const match = /^wasi:([a-z0-9-]+)\/([a-z0-9-]+)/.exec(specifier);
  if (!match) throw new Error(`unexpected import ${specifier}`);
  const camel = match[2]!.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  return [match[1]!, camel];
}

async function main(): Promise<JcoChildReport> {
  const [dir, name, runsText, warmupText, importsJson] = process.argv.slice(2);
  if (!dir || !name || !runsText || !warmupText || !importsJson) throw new Error("usage: jco-child DIR NAME RUNS WARMUP IMPORTS_JSON");
  const shim = (await import(SHIM_PACKAGE)) as Record<string, Record<string, unknown>>;
  const imports: Record<string, unknown> = {};
  for (const specifier of JSON.parse(importsJson) as string[]) {
    const [pkg, iface] = shimPath(specifier);
    const value = shim[pkg]?.[iface];
    if (value === undefined) throw new Error(`preview2-shim has no ${pkg}.${iface} for ${specifier}`);
    imports[specifier] = value;
  }
  const { instantiate } = (await import(pathToFileURL(path.join(dir, `${name}.js`)).href)) as { instantiate: Instantiate };
  const { readFileSync, readdirSync } = await import("node:fs");
  const modules = new Map<string, WebAssembly.Module>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".wasm"))) {
    modules.set(file, new WebAssembly.Module(readFileSync(path.join(dir, file))));
  }
  const getCoreModule = (file: string): WebAssembly.Module => {
    const m = modules.get(file);
    if (!m) throw new Error(`no core module ${file}`);
    return m;
  };
  const runs = Number(runsText);
  const warmup = Number(warmupText);
  const samplesMs: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const started = performance.now();
    const instance = await instantiate(getCoreModule, imports);
    instance.run.run();
    if (i >= warmup) samplesMs.push(performance.now() - started);
  }
  return { samplesMs };
}

main().then(
  (report) => process.send!(report, () => process.exit(0)),
  (e: unknown) => process.send!({ error: e instanceof Error ? (e.stack ?? e.message) : String(e) }, () => process.exit(1)),
);
