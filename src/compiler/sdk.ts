/**
 * The prebuilt script SDK (sdk/rust, built by scripts/build-sdk into build/sdk/): what rustc must be
 * told so scripts can `use sandbox_sdk::...`, `serde` and `serde_json` without `extern crate` lines.
 */
import { readFile, stat } from "node:fs/promises";
import path from "node:path";

/** The SDK as the compiler needs it. */
export interface SdkArtifacts {
  /** Directory the manifest was read from (absolute). */
  dir: string;
  /** Target the rlibs were built for, e.g. `wasm32-wasi`. */
  target: string;
  /** `rustc -vV` of the compiler that built the rlibs; only that compiler can link them. */
  rustcVersion: string;
  /** SHA-256 over the rlibs: part of every module's cache key. */
  sdkHash: string;
  /** Arguments to add to rustc: `--extern name=path` for each crate and `-L dependency=deps`. */
  rustcArgs: string[];
  /** Paths rustc must be able to read inside its sandbox. */
  readOnlyPaths: string[];
}

/** What the compiler expects the SDK to match; a mismatch means the SDK must be rebuilt. */
export interface SdkExpectation {
  /** `rustc -vV` of the rustc the daemon will run. */
  rustcVersion?: string;
  /** Target the daemon compiles for. */
  target?: string;
}

/** The crates a script may name directly (edition 2021 extern prelude). */
export const SDK_EXTERN_CRATES = ["sandbox_sdk", "serde", "serde_json"] as const;

/** Default output directory of scripts/build-sdk, relative to the repository root. */
export const DEFAULT_SDK_DIR = "build/sdk";

interface Manifest {
  target: string;
  rustc: string;
  sdkHash: string;
  externs: Record<string, string>;
  depsDir: string;
}

function isManifest(v: unknown): v is Manifest {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Record<string, unknown>;
  const externs = m["externs"];
  return (
    typeof m["target"] === "string" &&
    typeof m["rustc"] === "string" &&
    typeof m["sdkHash"] === "string" &&
    /^[0-9a-f]{64}$/.test(m["sdkHash"]) &&
    typeof m["depsDir"] === "string" &&
    typeof externs === "object" &&
    externs !== null &&
    SDK_EXTERN_CRATES.every((c) => typeof (externs as Record<string, unknown>)[c] === "string")
  );
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/**
 * Reads `dir/manifest.json` written by scripts/build-sdk. Returns undefined (and says why through
 * `warn`) when there is no usable SDK: scripts then compile without it, so a daemon without the SDK
 * still serves plain Rust. Never throws.
 */
export async function loadSdk(
  dir: string,
  expect: SdkExpectation = {},
  warn: (message: string) => void = () => {},
): Promise<SdkArtifacts | undefined> {
  const abs = path.resolve(dir);
  const manifestPath = path.join(abs, "manifest.json");
  let text: string;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch {
    warn(`no script SDK at ${manifestPath}; run scripts/build-sdk`);
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!isManifest(parsed)) {
    warn(`${manifestPath} is malformed; run scripts/build-sdk`);
    return undefined;
  }
  if (expect.target !== undefined && parsed.target !== expect.target) {
    warn(`script SDK was built for ${parsed.target}, not ${expect.target}; rerun scripts/build-sdk with RUSTC set`);
    return undefined;
  }
  if (expect.rustcVersion !== undefined && parsed.rustc.trim() !== expect.rustcVersion.trim()) {
    warn("script SDK was built by a different rustc than the daemon uses; rerun scripts/build-sdk with RUSTC set");
    return undefined;
  }
  const depsDir = path.resolve(abs, parsed.depsDir);
  const rustcArgs: string[] = [];
  for (const crate of SDK_EXTERN_CRATES) {
    const rlib = path.resolve(abs, parsed.externs[crate] ?? "");
    if (!(await isFile(rlib))) {
      warn(`script SDK file ${rlib} is missing; run scripts/build-sdk`);
      return undefined;
    }
    rustcArgs.push("--extern", `${crate}=${rlib}`);
  }
  rustcArgs.push("-L", `dependency=${depsDir}`);
  return {
    dir: abs,
    target: parsed.target,
    rustcVersion: parsed.rustc,
    sdkHash: parsed.sdkHash,
    rustcArgs,
    readOnlyPaths: [depsDir],
  };
}
