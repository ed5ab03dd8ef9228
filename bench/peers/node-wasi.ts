/**
 * Peer: Node's own `node:wasi`, in-process. Stdio goes to /dev/null so the
 * bench's output stays clean; a fresh WASI object per run, as `start` is once-only.
 */
import { closeSync, openSync } from "node:fs";
import { WASI } from "node:wasi";

/** Runs modules with node:wasi; close() releases the /dev/null descriptors. */
export class NodeWasiRunner {
  private readonly devNullRead = openSync("/dev/null", "r");
  private readonly devNullWrite = openSync("/dev/null", "w");

  /** Instantiates and starts the module once; returns its exit code. */
  run(module: WebAssembly.Module): number {
    const wasi = new WASI({
      version: "preview1",
      args: ["main.wasm"],
      env: {},
      stdin: this.devNullRead,
      stdout: this.devNullWrite,
      stderr: this.devNullWrite,
      returnOnExit: true,
    });
    const instance = new WebAssembly.Instance(module, wasi.getImportObject() as WebAssembly.Imports);
    return wasi.start(instance);
  }

  /** Closes the descriptors. */
  close(): void {
    closeSync(this.devNullRead);
    closeSync(this.devNullWrite);
  }
}
