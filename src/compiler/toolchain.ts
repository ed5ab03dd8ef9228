import { existsSync } from "node:fs";
import path from "node:path";
import { loadExeca } from "./lazy-execa.js";

/** Target names for WASI preview1, newest first: rustc >= 1.78 calls it wasm32-wasip1, older ones wasm32-wasi (same ABI). */
export const WASI_TARGETS = ["wasm32-wasip1", "wasm32-wasi"] as const;

/** Where Debian's rustc lives; rustup's shim usually shadows it on PATH and may lack a wasm target. */
export const DEBIAN_RUSTC = "/usr/bin/rustc";

/** Time allowed for `rustc -vV` / `--print sysroot` while probing a candidate. */
const PROBE_TIMEOUT_MS = 15_000;

/** A rustc that can build WASI preview1 modules. */
export interface Toolchain {
  readonly rustc: string;
  readonly target: (typeof WASI_TARGETS)[number];
  readonly sysroot: string;
  /** Full `rustc -vV` output: part of every module's cache key. */
  readonly version: string;
}

/** Why no toolchain was found, in words an operator can act on. */
export const TOOLCHAIN_INSTALL_HINT =
  "no rustc with a wasm32-wasip1 or wasm32-wasi target was found; install one, e.g. on Debian: " +
  "`apt-get install rustc libstd-rust-dev-wasm32` (or `rustup target add wasm32-wasip1`), or pass --rustc PATH";

/**
 * Finds a rustc whose sysroot holds the std for a WASI preview1 target. Tries
 * an explicit path only if given; otherwise `rustc` on PATH, then Debian's.
 * Returns undefined (never throws) so the daemon can still start without one.
 */
export async function detectToolchain(explicitRustc?: string): Promise<Toolchain | undefined> {
  const candidates = explicitRustc ? [explicitRustc] : ["rustc", DEBIAN_RUSTC];
  // Probe all at once (each costs a few hundred ms of rustc start-up), keep the first usable in order.
  const probed = await Promise.all(candidates.map(probe));
  return probed.find((found) => found !== undefined);
}

async function probe(rustc: string): Promise<Toolchain | undefined> {
  try {
    const opts = { timeout: PROBE_TIMEOUT_MS, reject: true } as const;
    const execa = await loadExeca();
    const [{ stdout: sysroot }, { stdout: version }] = await Promise.all([
      execa(rustc, ["--print", "sysroot"], opts),
      execa(rustc, ["-vV"], opts),
    ]);
    for (const target of WASI_TARGETS) {
      // A target is usable only if its std is installed, not merely known to rustc.
      if (existsSync(path.join(sysroot.trim(), "lib", "rustlib", target, "lib"))) {
        return { rustc: await resolveBinary(rustc), target, sysroot: sysroot.trim(), version: version.trim() };
      }
    }
  } catch {
    // Not installed or broken: try the next candidate.
  }
  return undefined;
}

/** Absolute path of a command, so later runs (and bwrap) do not depend on PATH. */
async function resolveBinary(cmd: string): Promise<string> {
  if (cmd.includes("/")) return path.resolve(cmd);
  const execa = await loadExeca();
  const { stdout } = await execa("sh", ["-c", 'command -v "$1"', "sh", cmd]);
  return stdout.trim();
}
