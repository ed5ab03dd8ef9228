import { WASI_MODULE } from "../wasi/abi.js";
import { PREVIEW1_FUNCTIONS } from "../wasi/functions.js";

const PROVIDED = new Set<string>(PREVIEW1_FUNCTIONS);

/** Checks a compiled module is a WASI preview1 command: exports function `_start` and memory `memory`,
 *  imports only functions from `wasi_snapshot_preview1` that our host provides. Returns a list of problems (empty = ok). */
export function validateCommandModule(module: WebAssembly.Module): string[] {
  const problems: string[] = [];
  const exports = WebAssembly.Module.exports(module);
  const start = exports.find((e) => e.name === "_start");
  if (start === undefined) problems.push("the module does not export `_start` (is it a command, not a library?)");
  else if (start.kind !== "function") problems.push("`_start` is exported but is not a function");
  const memory = exports.find((e) => e.name === "memory");
  if (memory === undefined) problems.push("the module does not export its memory as `memory`");
  else if (memory.kind !== "memory") problems.push("`memory` is exported but is not a memory");
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== WASI_MODULE) {
      problems.push(`import ${imp.module}.${imp.name}: only ${WASI_MODULE} imports are provided`);
    } else if (imp.kind !== "function") {
      problems.push(`import ${imp.module}.${imp.name}: only function imports are provided, not ${imp.kind}`);
    } else if (!PROVIDED.has(imp.name)) {
      problems.push(`import ${imp.module}.${imp.name}: not a wasi_snapshot_preview1 function`);
    }
  }
  return problems;
}
