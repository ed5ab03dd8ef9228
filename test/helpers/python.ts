/**
 * Runs Debian's python3 (which scripts/setup gives python3-grpcio, python3-protobuf and
 * python3-cryptography) on a script, as the Python client and reflection tests do.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Debian's interpreter: a python3 earlier on PATH (pyenv, a venv) may lack the Debian modules. */
export const DEBIAN_PYTHON = "/usr/bin/python3";

/** The repository root (tests run from dist/test). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** What a finished python3 run printed, and its exit status. */
export interface PythonRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `python3 args...` from the repository root with extra environment; never rejects on a non-zero exit. */
export function runPython(args: readonly string[], env: Readonly<Record<string, string>> = {}, timeoutMs = 120_000): Promise<PythonRun> {
  return new Promise((resolve, reject) => {
    execFile(
      DEBIAN_PYTHON,
      [...args],
      { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 << 20 },
      (e, stdout, stderr) => {
        if (e && typeof e.code !== "number") reject(e);
        else resolve({ code: e ? Number(e.code) : 0, stdout, stderr });
      },
    );
  });
}
