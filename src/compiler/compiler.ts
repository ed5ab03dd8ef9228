import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { createHash } from "node:crypto";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Logger } from "../logger.js";
import { MAX_SOURCE_BYTES, MAX_WASM_BYTES } from "../limits.js";
import { ModuleStore, sha256Hex } from "../cache/module-store.js";
import { validateCommandModule } from "../runtime/wasm/validate.js";
import { parseRustcDiagnostics, type Diagnostic } from "./diagnostics.js";
import { TOOLCHAIN_INSTALL_HINT, type Toolchain } from "./toolchain.js";

/** Wall-clock budget of one rustc run. */
export const COMPILE_TIMEOUT_MS = 60_000;

/** Flags every script is compiled with; part of the cache key. */
export const RUSTC_FLAGS = ["--edition", "2021", "--crate-type", "bin", "-O", "-C", "strip=symbols", "--error-format=json"] as const;

/** Name of the user's source inside the compile dir; diagnostics are filtered to it. */
const SOURCE_FILE = "main.rs";

/** The result of a Compile. A compile error is a result, not an exception. */
export interface CompileResult {
  readonly ok: boolean;
  readonly moduleId: string;
  readonly cacheHit: boolean;
  readonly diagnostics: readonly Diagnostic[];
}

/** Compiles Rust source to WASI preview1 modules and registers precompiled ones, through the module store. */
export class Compiler {
  constructor(
    private readonly toolchain: Toolchain | undefined,
    private readonly store: ModuleStore,
    private readonly logger: Logger,
  ) {}

  /** Compiles source (or finds it in the cache). */
  async compile(source: string, signal?: AbortSignal): Promise<CompileResult> {
    if (source.trim() === "") throw new SandboxError("EMPTY_SOURCE", "source is empty");
    if (Buffer.byteLength(source) > MAX_SOURCE_BYTES) {
      throw new SandboxError("SOURCE_TOO_LARGE", `source exceeds ${MAX_SOURCE_BYTES} bytes`);
    }
    const toolchain = this.toolchain;
    if (!toolchain) throw new SandboxError("TOOLCHAIN_MISSING", TOOLCHAIN_INSTALL_HINT);
    const moduleId = sha256Hex(source, toolchain.version, toolchain.target, RUSTC_FLAGS.join(" "));
    if (await this.store.get(moduleId)) return { ok: true, moduleId, cacheHit: true, diagnostics: [] };

    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-compile-"));
    try {
      await writeFile(path.join(dir, SOURCE_FILE), source);
      const out = path.join(dir, "main.wasm");
      const result = await execa(toolchain.rustc, [...RUSTC_FLAGS, "--target", toolchain.target, "-o", out, SOURCE_FILE], {
        cwd: dir,
        reject: false,
        timeout: COMPILE_TIMEOUT_MS,
        ...(signal ? { cancelSignal: signal } : {}),
      });
      if (result.isCanceled) throw new SandboxError("CANCELLED", "compile cancelled");
      if (result.timedOut) throw new SandboxError("COMPILE_TIMEOUT", `rustc exceeded ${COMPILE_TIMEOUT_MS} ms`);
      const diagnostics = parseRustcDiagnostics(result.stderr, { userFile: SOURCE_FILE, lineOffset: 0 });
      if (result.exitCode !== 0) {
        this.logger.debug("compile failed", { moduleId, diagnostics: diagnostics.length });
        return { ok: false, moduleId: "", cacheHit: false, diagnostics };
      }
      await this.store.put(moduleId, await readFile(out));
      return { ok: true, moduleId, cacheHit: false, diagnostics };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Registers a precompiled WASI preview1 command module; its id is the SHA-256 of its bytes. */
  async register(wasm: Uint8Array): Promise<CompileResult> {
    if (wasm.byteLength > MAX_WASM_BYTES) throw new SandboxError("WASM_TOO_LARGE", `module exceeds ${MAX_WASM_BYTES} bytes`);
    let module: WebAssembly.Module;
    try {
      module = await WebAssembly.compile(wasm as Uint8Array<ArrayBuffer>);
    } catch (e: unknown) {
      throw new SandboxError("INVALID_WASM", `not a valid WebAssembly module: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const problems = validateCommandModule(module);
    if (problems.length > 0) throw new SandboxError("INVALID_WASM", `not a WASI preview1 command: ${problems.join("; ")}`);
    const moduleId = createHash("sha256").update(wasm).digest("hex");
    const cacheHit = (await this.store.get(moduleId)) !== undefined;
    if (!cacheHit) await this.store.put(moduleId, wasm);
    return { ok: true, moduleId, cacheHit, diagnostics: [] };
  }

  /** The bytes of a stored module, or NOT_FOUND. */
  async load(moduleId: string): Promise<Uint8Array> {
    const bytes = await this.store.get(moduleId);
    if (!bytes) throw new SandboxError("MODULE_NOT_FOUND", `no module ${moduleId} in the cache; compile it first`);
    return bytes;
  }
}
