import { WASI_MODULE } from "../wasi/abi.js";
import { PREVIEW1_FUNCTIONS } from "../wasi/functions.js";
import { HTTP_FUNCTIONS, HTTP_MODULE } from "../net/http-abi.js";
import { functionImports } from "./function-imports.js";

const PROVIDED = new Set<string>(PREVIEW1_FUNCTIONS);

/** Checks a compiled module is a WASI preview1 command: exports function `_start` and memory `memory`, imports only
 *  functions from `wasi_snapshot_preview1` that our host provides, and from `sandboxd_http_v1` exactly its functions
 *  with exactly their signatures (read from `wasm`, the module's bytes). Returns a list of problems (empty = ok). */
export function validateCommandModule(module: WebAssembly.Module, wasm: Uint8Array): string[] {
  const problems: string[] = [];
  const exports = WebAssembly.Module.exports(module);
  const start = exports.find((e) => e.name === "_start");
  if (start === undefined) problems.push("the module does not export `_start` (is it a command, not a library?)");
  else if (start.kind !== "function") problems.push("`_start` is exported but is not a function");
  const memory = exports.find((e) => e.name === "memory");
  if (memory === undefined) problems.push("the module does not export its memory as `memory`");
  else if (memory.kind !== "memory") problems.push("`memory` is exported but is not a memory");
  const imports = WebAssembly.Module.imports(module);
  for (const imp of imports) {
    if (imp.module !== WASI_MODULE && imp.module !== HTTP_MODULE) {
      problems.push(`import ${imp.module}.${imp.name}: only ${WASI_MODULE} and ${HTTP_MODULE} imports are provided`);
    } else if (imp.kind !== "function") {
      problems.push(`import ${imp.module}.${imp.name}: only function imports are provided, not ${imp.kind}`);
    } else if (imp.module === WASI_MODULE && !PROVIDED.has(imp.name)) {
      problems.push(`import ${imp.module}.${imp.name}: not a wasi_snapshot_preview1 function`);
    } else if (imp.module === HTTP_MODULE && !Object.hasOwn(HTTP_FUNCTIONS, imp.name)) {
      problems.push(`import ${imp.module}.${imp.name}: not a ${HTTP_MODULE} function (it has ${Object.keys(HTTP_FUNCTIONS).join(", ")})`);
    }
  }
  if (imports.some((imp) => imp.module === HTTP_MODULE)) problems.push(...httpSignatureProblems(wasm));
  return problems;
}

function httpSignatureProblems(wasm: Uint8Array): string[] {
  const found = functionImports(wasm);
  if (found instanceof Error) return [found.message];
  const problems: string[] = [];
  for (const imp of found) {
    if (imp.module !== HTTP_MODULE || !Object.hasOwn(HTTP_FUNCTIONS, imp.name)) continue;
    const expected = HTTP_FUNCTIONS[imp.name as keyof typeof HTTP_FUNCTIONS];
    if (signature(imp.params, imp.results) !== signature(expected.params, expected.results)) {
      problems.push(
        `import ${imp.module}.${imp.name}: its type is ${signature(imp.params, imp.results)}, not ${signature(expected.params, expected.results)}`,
      );
    }
  }
  return problems;
}

const VALUE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
  0x7b: "v128",
  0x70: "funcref",
  0x6f: "externref",
};

function signature(params: readonly number[], results: readonly number[]): string {
  const names = (types: readonly number[]): string => types.map((t) => VALUE_TYPE_NAMES[t] ?? `0x${t.toString(16)}`).join(", ");
  return `(${names(params)}) -> (${names(results)})`;
}
