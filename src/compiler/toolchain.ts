import { existsSync } from "node:fs";
import path from "node:path";
import type { Diagnostic } from "./diagnostics.js";
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

/** A toolchain that cannot build modules, in words an operator can act on. */
export interface ToolchainProblem {
  /** What is wrong, and what to install. */
  readonly message: string;
  /** The Debian packages that fix it. */
  readonly packages: readonly string[];
}

/** What start-up found: a toolchain, or why there is none. */
export type ToolchainProbe =
  | { readonly toolchain: Toolchain; readonly problem?: undefined }
  | { readonly toolchain?: undefined; readonly problem: ToolchainProblem };

/** The Debian packages of a complete toolchain: rustc, the wasm std, and the linker that std only recommends. */
const DEBIAN_TOOLCHAIN_PACKAGES = ["rustc", "libstd-rust-dev-wasm32", "lld-14"] as const;

/** Why no toolchain was found at all, in words an operator can act on. */
const TOOLCHAIN_INSTALL_HINT =
  "no rustc with a wasm32-wasip1 or wasm32-wasi target was found; install one, e.g. on Debian: " +
  `\`apt-get install ${DEBIAN_TOOLCHAIN_PACKAGES.join(" ")}\` (or \`rustup target add wasm32-wasip1\`), or pass --rustc PATH`;

/** The problem when no rustc runs at all. */
export const NO_TOOLCHAIN: ToolchainProblem = { message: TOOLCHAIN_INSTALL_HINT, packages: DEBIAN_TOOLCHAIN_PACKAGES };

/** The program the start-up probe builds: when it does not link, no script will. */
export const LINK_PROBE_SOURCE = "fn main() {}\n";

/** rustc's error when it cannot run the linker (Debian's rustc finds rust-lld, a link to lld-14, on PATH). */
const LINKER_NOT_FOUND_RE = /^linker `([^`]*)` not found/;
/** rustc's error when the target's std (or core) is not in the sysroot. */
const STD_NOT_FOUND_RE = /^can't find crate for `(std|core)`/;

/**
 * Finds a rustc whose sysroot holds the std for a WASI preview1 target. Tries
 * an explicit path only if given; otherwise `rustc` on PATH, then Debian's.
 * Never throws, so the daemon can still start without one. It does not build
 * anything: {@link toolchainProblemIn} reads what a test build says.
 */
export async function probeToolchain(explicitRustc?: string): Promise<ToolchainProbe> {
  const candidates = explicitRustc ? [explicitRustc] : ["rustc", DEBIAN_RUSTC];
  // Probe all at once (each costs a few hundred ms of rustc start-up), keep the first usable in order.
  const probed = await Promise.all(candidates.map(probe));
  const toolchain = probed.find((found): found is Toolchain => found !== undefined && "target" in found);
  if (toolchain) return { toolchain };
  const withoutStd = probed.filter((found): found is { rustc: string; sysroot: string } => found !== undefined);
  if (withoutStd.length === 0) return { problem: NO_TOOLCHAIN };
  const where = withoutStd.map((r) => `${r.rustc} (sysroot ${r.sysroot})`).join(", ");
  return {
    problem: {
      message:
        `rustc was found (${where}) but without the wasm32-wasi standard library; install libstd-rust-dev-wasm32 ` +
        "(Debian: `apt-get install libstd-rust-dev-wasm32`; with rustup: `rustup target add wasm32-wasip1`), or pass --rustc PATH",
      packages: ["libstd-rust-dev-wasm32"],
    },
  };
}

/** A usable toolchain, or undefined: {@link probeToolchain} without the reason. */
export async function detectToolchain(explicitRustc?: string): Promise<Toolchain | undefined> {
  return (await probeToolchain(explicitRustc)).toolchain;
}

/**
 * What is missing, judging by rustc's diagnostics for a build of
 * {@link LINK_PROBE_SOURCE} (or any build): the linker or the target's std.
 * Undefined when the diagnostics blame neither.
 */
export function toolchainProblemIn(diagnostics: readonly Diagnostic[], target: string): ToolchainProblem | undefined {
  for (const d of diagnostics) {
    if (d.severity !== "error") continue;
    const linker = LINKER_NOT_FOUND_RE.exec(d.message);
    if (linker) {
      return {
        message:
          `rustc cannot link ${target} modules: its linker \`${linker[1]}\` was not found; install lld-14 ` +
          "(Debian: `apt-get install lld-14`, which provides rust-lld; libstd-rust-dev-wasm32 only recommends it)",
        packages: ["lld-14"],
      };
    }
    if (STD_NOT_FOUND_RE.test(d.message)) {
      return {
        message:
          `rustc cannot build ${target} modules: the target's standard library is missing or unusable; install libstd-rust-dev-wasm32 ` +
          "(Debian: `apt-get install libstd-rust-dev-wasm32`; with rustup: `rustup target add wasm32-wasip1`)",
        packages: ["libstd-rust-dev-wasm32"],
      };
    }
  }
  return undefined;
}

/** The problem when the probe build failed in a way {@link toolchainProblemIn} does not recognise. */
export function unrecognisedToolchainProblem(target: string): ToolchainProblem {
  return {
    message:
      `rustc could not build a trivial ${target} program (its output is in the daemon log); ` +
      `reinstall the toolchain (Debian: \`apt-get install --reinstall ${DEBIAN_TOOLCHAIN_PACKAGES.join(" ")}\`), or pass --rustc PATH`,
    packages: DEBIAN_TOOLCHAIN_PACKAGES,
  };
}

/** A rustc that answers, with or without the WASI std; undefined when it does not run. */
async function probe(rustc: string): Promise<Toolchain | { rustc: string; sysroot: string } | undefined> {
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
    return { rustc, sysroot: sysroot.trim() };
  } catch {
    // Not installed or broken: try the next candidate.
    return undefined;
  }
}

/** Absolute path of a command, so later runs (and bwrap) do not depend on PATH. */
async function resolveBinary(cmd: string): Promise<string> {
  if (cmd.includes("/")) return path.resolve(cmd);
  const execa = await loadExeca();
  const { stdout } = await execa("sh", ["-c", 'command -v "$1"', "sh", cmd]);
  return stdout.trim();
}
