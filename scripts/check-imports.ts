/**
 * The layering and import-cycle gate of scripts/test: reads every import of src/ (generated code aside) and
 * fails, naming each offending import, if a file imports a layer above its own, if anything below the gRPC
 * adapters imports gRPC (src/grpc, src/gen/grpc or an @grpc/ package), or if imports form a cycle.
 *
 *   node dist/scripts/check-imports.js [ROOT]   (scripts/test runs it; it reads the sources, not dist/)
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the argument, or this checkout (this file runs from dist/scripts/). */
const ROOT = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "../.."));
const SRC = join(ROOT, "src");

/**
 * Layers from the bottom up: a file may import its own layer and those below. First match wins; a src/ file
 * that matches none fails the check, so a new folder has to be placed here on purpose.
 */
const LAYERS: readonly { readonly name: string; readonly files: RegExp }[] = [
  {
    name: "foundation",
    files:
      /^src\/(errors\/|gen\/pb\/|limits\.ts$|logger\.ts$|elapsed\.ts$|atomic-file\.ts$|unix-group\.ts$|request-limits\.ts$|version\.ts$)/,
  },
  { name: "core", files: /^src\/(compiler|policy|runtime|cache|receipt)\// },
  { name: "service", files: /^src\/(sandbox\.ts$|admin\/)/ },
  { name: "adapters", files: /^src\/(grpc\/|gen\/grpc\/|metrics\/)/ },
  { name: "daemon", files: /^src\/daemon\.ts$/ },
  { name: "entry points", files: /^src\/cli\// },
];
/** The first layer allowed to speak gRPC. */
const GRPC_LAYER = LAYERS.findIndex((l) => l.name === "adapters");
/** Imports that are gRPC, whatever the path. */
const GRPC_PACKAGE = /^@grpc\//;
/** Import and re-export specifiers, static and dynamic. */
const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*"([^"]+)"|(?:^|\n)\s*import\s*"([^"]+)"|\bimport\(\s*"([^"]+)"\s*\)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [path] : [];
  });
}

function layerOf(file: string): number {
  return LAYERS.findIndex((l) => l.files.test(file));
}

/** Every import of `file` (repository-relative): local ones resolved to their .ts source, packages as written. */
function importsOf(file: string): { local: string[]; packages: string[] } {
  const text = readFileSync(join(ROOT, file), "utf8");
  const local: string[] = [];
  const packages: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec === undefined) continue;
    if (!spec.startsWith(".")) {
      packages.push(spec);
      continue;
    }
    const target = relative(ROOT, resolve(dirname(join(ROOT, file)), spec.replace(/\.js$/, ".ts")));
    local.push(target);
  }
  return { local, packages };
}

/** Every cycle in the graph, each as the files on it (Tarjan's strongly connected components). */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

function main(): number {
  const files = sourceFiles(SRC)
    .map((f) => relative(ROOT, f))
    .filter((f) => !f.startsWith("src/gen/"))
    .sort();
  const problems: string[] = [];
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const layer = layerOf(file);
    if (layer < 0) {
      problems.push(`${file}: in no layer; place it in LAYERS (scripts/check-imports.ts)`);
      continue;
    }
    const { local, packages } = importsOf(file);
    graph.set(file, local);
    for (const target of local) {
      if (!existsSync(join(ROOT, target))) {
        problems.push(`${file}: imports ${target}, which does not exist`);
        continue;
      }
      const targetLayer = layerOf(target);
      if (targetLayer > layer) {
        problems.push(`${file} (${LAYERS[layer]!.name}) imports ${target} (${LAYERS[targetLayer]!.name}): nothing imports upward`);
      }
    }
    if (layer < GRPC_LAYER) {
      for (const p of packages.filter((p) => GRPC_PACKAGE.test(p))) problems.push(`${file}: imports ${p}: the core never speaks gRPC`);
    }
  }
  for (const cycle of cycles(graph)) problems.push(`import cycle: ${cycle.join(" <-> ")}`);
  for (const p of problems) console.error(`check-imports: ${p}`);
  console.log(`check-imports: ${files.length} files, ${problems.length} problem(s)`);
  return problems.length === 0 ? 0 : 1;
}

process.exitCode = main();
