/**
 * The compile baseline: the rustc command the daemon runs, run directly (no
 * daemon, no gRPC, no cache), and the same command inside bubblewrap's hermetic
 * sandbox, so the report can split the daemon's overhead from the sandbox's.
 * Flags come from src/compiler at run time so the baseline follows the compiler.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { RUSTC_FLAGS } from "../src/compiler/compiler.js";
import { detectBubblewrap, hermeticCommand } from "../src/compiler/hermetic.js";
import { DEFAULT_SDK_DIR, loadSdk, type SdkArtifacts } from "../src/compiler/sdk.js";
import { detectToolchain, type Toolchain } from "../src/compiler/toolchain.js";

/** The repository root (bench/ is compiled to dist/bench/). */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Name of the source file in each compile dir, as the daemon names it. */
const SOURCE_FILE = "main.rs";
/** Wall-clock budget of one baseline rustc run. */
const RUSTC_TIMEOUT_MS = 120_000;

/** The toolchain, SDK and bubblewrap the daemon would find on this machine. */
export interface CompileSetup {
  readonly toolchain: Toolchain;
  readonly sdk: SdkArtifacts | undefined;
  readonly bwrap: string | undefined;
}

/** Detects what the daemon would use; undefined when there is no WASI rustc here. */
export async function detectCompileSetup(): Promise<CompileSetup | undefined> {
  const toolchain = await detectToolchain();
  if (!toolchain) return undefined;
  const sdk = await loadSdk(path.join(REPO_ROOT, DEFAULT_SDK_DIR), { rustcVersion: toolchain.version, target: toolchain.target });
  return { toolchain, sdk, bwrap: await detectBubblewrap() };
}

/** rustc's arguments for `SOURCE_FILE` → `out`, as src/compiler builds them (SDK externs when the SDK is built). */
export function rustcArgs(setup: CompileSetup, out: string): string[] {
  return [...RUSTC_FLAGS, "--target", setup.toolchain.target, ...(setup.sdk?.rustcArgs ?? []), "-o", out, SOURCE_FILE];
}

/** Compiles `source` once in a fresh temp dir, directly or under bubblewrap; returns wall ms. Throws if rustc fails. */
export async function timeRawRustc(setup: CompileSetup, source: string, hermetic: boolean): Promise<number> {
  const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-bench-rustc-"));
  try {
    await writeFile(path.join(dir, SOURCE_FILE), source);
    const args = rustcArgs(setup, path.join(dir, "main.wasm"));
    const command =
      hermetic && setup.bwrap
        ? hermeticCommand({
            bwrap: setup.bwrap,
            rustc: setup.toolchain.rustc,
            sysroot: setup.toolchain.sysroot,
            workDir: dir,
            readOnlyPaths: setup.sdk?.readOnlyPaths ?? [],
            args,
          })
        : { file: setup.toolchain.rustc, args, env: { PATH: "/usr/bin:/bin", LC_ALL: "C" } };
    const started = performance.now();
    const result = await execa(command.file, command.args, {
      cwd: dir,
      env: command.env,
      extendEnv: false,
      reject: false,
      timeout: RUSTC_TIMEOUT_MS,
    });
    const elapsed = performance.now() - started;
    if (result.exitCode !== 0) throw new Error(`rustc failed (${result.exitCode}): ${String(result.stderr).slice(0, 2000)}`);
    return elapsed;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
