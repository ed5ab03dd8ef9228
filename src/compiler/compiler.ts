import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { SandboxError } from "../errors/sandbox-error.js";
import type { Logger } from "../logger.js";
import {
  COMPILE_MAX_QUEUED,
  COMPILE_MEMORY_LIMIT_BYTES,
  COMPILE_TIMEOUT_MS,
  MAX_DIAGNOSTICS_BYTES,
  MAX_SOURCE_BYTES,
  MAX_WASM_BYTES,
} from "../limits.js";
import { ModuleStore, sha256Hex } from "../cache/module-store.js";
import { ModuleBlocklist } from "../policy/module-blocklist.js";
import { validateCommandModule } from "../runtime/wasm/validate.js";
import { CompileQueue } from "./compile-queue.js";
import { hasErrors, limitDiagnostics, parseRustcDiagnostics, rustcMessages, type Diagnostic } from "./diagnostics.js";
import { applyMachineApplicableFixes } from "./fixes.js";
import { detectBubblewrap, hermeticCommand, insecureCommand, type HermeticCommand } from "./hermetic.js";
import type { ProvenanceFields, ToolchainRecord } from "./module-meta.js";
import { DEFAULT_SDK_DIR, loadSdk, type SdkArtifacts } from "./sdk.js";
import { Singleflight } from "./singleflight.js";
import {
  LINK_PROBE_SOURCE,
  NO_TOOLCHAIN,
  toolchainProblemIn,
  unrecognisedToolchainProblem,
  type Toolchain,
  type ToolchainProbe,
  type ToolchainProblem,
} from "./toolchain.js";
import { loadExeca } from "./lazy-execa.js";

/** Re-exported from src/limits.ts for callers that knew it here (the wall-clock budget of one rustc run). */
export { COMPILE_TIMEOUT_MS };

/** Flags every script is compiled with; part of the cache key. */
export const RUSTC_FLAGS = ["--edition", "2021", "--crate-type", "bin", "-O", "-C", "strip=symbols", "--error-format=json"] as const;

/** Bumped when anything about how a module is built changes without its inputs changing. */
const CACHE_KEY_VERSION = "sandboxd-compile-v1";

/** After the wall-clock budget, SIGTERM; if bwrap/rustc is still there this much later, SIGKILL. */
const RUSTC_KILL_GRACE_MS = 1_000;

/** rustc's JSON diagnostics kept in memory; a source producing more is pathological and gets truncated. */
const RUSTC_MAX_STDERR_BYTES = 16 * 1024 * 1024;

/** Prefix of the private temp dir of each compile (under the OS temp dir). */
const WORK_DIR_PREFIX = "sandboxd-compile-";

/** A work dir older than this (and twice the rustc budget) was left by a killed daemon and is removed at start. */
const STALE_WORK_DIR_MS = 60 * 60 * 1000;

/** Name of the user's source inside the compile dir; diagnostics are filtered to it. */
const SOURCE_FILE = "main.rs";

/** What rustc prints when its RLIMIT_AS is hit (allocation failure, or the dynamic loader unable to map a library). */
const OUT_OF_MEMORY_RE = /memory allocation of \d+ bytes failed|failed to map segment|Cannot allocate memory|out of memory/i;

/** The result of a Compile. A compile error is a result, not an exception. */
export interface CompileResult {
  readonly ok: boolean;
  /** "" when the source did not compile. */
  readonly moduleId: string;
  /** The result (a module, or a failure's diagnostics) came from the cache and rustc did not run. */
  readonly cacheHit: boolean;
  readonly diagnostics: readonly Diagnostic[];
  /** The source with rustc's machine-applicable suggestions applied; "" when there are none. */
  readonly fixedSource: string;
}

/** Called once a compile knows whether it is served from the cache, before rustc starts. */
export type OnCompiling = (cacheHit: boolean) => void;

/** Operator settings of the compiler; every field has a default. */
export interface CompilerSettings {
  /** Compile without bubblewrap when it is unavailable (logged loudly); otherwise Compile is refused. */
  readonly insecureCompile?: boolean;
  /** Wall-clock budget of one rustc run. */
  readonly timeoutMs?: number;
  /** Address-space cap of one rustc run. */
  readonly memoryLimitBytes?: number;
  /** rustc runs at once (default: the number of cores). */
  readonly concurrency?: number;
  /** Compiles waiting for a slot beyond which new ones get COMPILE_QUEUE_FULL. */
  readonly maxQueued?: number;
  /** Where scripts/build-sdk put the SDK (default: build/sdk in the package). */
  readonly sdkDir?: string;
  /** bubblewrap binary to use instead of looking on PATH and in /usr/bin. */
  readonly bwrapPath?: string;
}

/** Everything {@link Compiler} is built from, already detected. */
export interface CompilerOptions extends CompilerSettings {
  /** bubblewrap to run rustc in, or undefined when there is none. */
  readonly bwrap: string | undefined;
  /** The script SDK linked into every script, or undefined to compile plain Rust. */
  readonly sdk: SdkArtifacts | undefined;
}

/**
 * Removes compile dirs a SIGKILLed daemon left behind. Only old ones: another daemon on this host
 * may be compiling in a young one, and no compile outlives its budget.
 */
async function removeStaleWorkDirs(olderThanMs: number, logger: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return;
  }
  const cutoff = Date.now() - olderThanMs;
  for (const name of names.filter((n) => n.startsWith(WORK_DIR_PREFIX))) {
    const dir = path.join(tmpdir(), name);
    try {
      if ((await stat(dir)).mtimeMs < cutoff) {
        await rm(dir, { recursive: true, force: true });
        logger.info("removed a stale compile dir", { dir });
      }
    } catch {
      // gone already, or not ours to remove
    }
  }
}

/** build/sdk of this package (dist/src/compiler/compiler.js → repo root). */
function packageSdkDir(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../..", DEFAULT_SDK_DIR);
}

/**
 * Version of the metadata stored with each cache entry. An entry with another version (or none:
 * the first format kept only warnings) is rebuilt on its next Compile, so its diagnostics gain
 * what later versions carry; its module stays runnable by id meanwhile.
 */
const META_VERSION = 2;

/**
 * What the cache keeps for a source: its diagnostics and fixed source, and whether it compiled.
 * A source that failed is kept too (with no module bytes), so an agent retrying it is answered
 * without rustc, under the same integrity checks as a module.
 */
interface StoredMeta extends ProvenanceFields {
  v: typeof META_VERSION;
  ok: boolean;
  diagnostics: readonly Diagnostic[];
  fixedSource: string;
}

function encodeMeta(meta: Omit<StoredMeta, "v">): Uint8Array {
  return Buffer.from(JSON.stringify({ v: META_VERSION, ...meta } satisfies StoredMeta));
}

/** The stored compile result, or undefined for an entry to rebuild (older format, or unreadable). */
function decodeMeta(moduleId: string, meta: Uint8Array): CompileResult | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(meta).toString("utf8")) as Partial<StoredMeta>;
    if (parsed.v !== META_VERSION || typeof parsed.ok !== "boolean" || !Array.isArray(parsed.diagnostics)) return undefined;
    return {
      ok: parsed.ok,
      moduleId: parsed.ok ? moduleId : "",
      cacheHit: true,
      diagnostics: parsed.diagnostics,
      fixedSource: typeof parsed.fixedSource === "string" ? parsed.fixedSource : "",
    };
  } catch {
    return undefined;
  }
}

/**
 * Whether a failed compile is a verdict on the source, worth caching: an error points into it.
 * Errors with no span there (a linker that could not write, a full /tmp) may not recur.
 */
function failedOnSource(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === "error" && d.spans.length > 0);
}

/** TOOLCHAIN_MISSING for a problem, naming the packages that fix it. */
function toolchainMissing(problem: ToolchainProblem): SandboxError {
  return new SandboxError("TOOLCHAIN_MISSING", problem.message, { metadata: { install: problem.packages.join(" ") } });
}

/** What one rustc run left behind. */
interface RustcRun {
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stderr: string;
  readonly isCanceled: boolean;
  readonly timedOut: boolean;
  readonly rustcMs: number;
}

/** Compiles Rust source to WASI preview1 modules and registers precompiled ones, through the module store. */
export class Compiler {
  private readonly queue: CompileQueue;
  private readonly flights = new Singleflight<CompileResult>();
  /** Why Compile cannot work on this host (found once, at start), or undefined when it can. */
  private unavailableReason: SandboxError | undefined;

  constructor(
    private readonly toolchain: Toolchain | undefined,
    private readonly store: ModuleStore,
    private readonly logger: Logger,
    private readonly options: CompilerOptions,
    /** Ids the operator blocked: refused before rustc runs and before a cached module is handed out. */
    private readonly blocklist: ModuleBlocklist = ModuleBlocklist.empty(),
  ) {
    this.queue = new CompileQueue(options.concurrency ?? availableParallelism(), options.maxQueued ?? COMPILE_MAX_QUEUED);
  }

  /**
   * Detects bubblewrap, loads the SDK, builds a trivial program the way every
   * script is built (so a missing linker or std shows now, not at the first
   * Compile), says once and loudly what is missing, and builds the compiler.
   * `probe` is what toolchain detection found; undefined means nothing at all.
   */
  static async create(
    probe: ToolchainProbe | undefined,
    store: ModuleStore,
    logger: Logger,
    settings: CompilerSettings = {},
    blocklist: ModuleBlocklist = ModuleBlocklist.empty(),
  ): Promise<Compiler> {
    const toolchain = probe?.toolchain;
    const bwrap = await detectBubblewrap(...(settings.bwrapPath ? [[settings.bwrapPath]] : []));
    if (bwrap) logger.info("rustc runs hermetically under bubblewrap", { bwrap });
    else if (settings.insecureCompile) {
      logger.warn(
        "INSECURE: bubblewrap is unavailable and --insecure-compile was given; scripts can read this host's files at compile time",
      );
    }
    let sdk: SdkArtifacts | undefined;
    if (toolchain) {
      sdk = await loadSdk(settings.sdkDir ?? packageSdkDir(), { rustcVersion: toolchain.version, target: toolchain.target }, (m) =>
        logger.warn(m),
      );
      if (sdk) logger.info("script SDK loaded", { sdkHash: sdk.sdkHash, dir: sdk.dir });
    }
    await removeStaleWorkDirs(Math.max(STALE_WORK_DIR_MS, 2 * (settings.timeoutMs ?? COMPILE_TIMEOUT_MS)), logger);
    const compiler = new Compiler(toolchain, store, logger, { ...settings, bwrap, sdk }, blocklist);
    if (!toolchain) compiler.unavailableReason = toolchainMissing(probe?.problem ?? NO_TOOLCHAIN);
    else if (!compiler.sandboxMissing()) {
      const problem = await compiler.buildProbe(toolchain);
      if (problem) compiler.unavailableReason = toolchainMissing(problem);
    }
    const reason = compiler.unavailable;
    if (reason) logger.error(`Compile is unavailable: ${reason.message}`, { reason: reason.reason, ...reason.metadata });
    return compiler;
  }

  /** The rustc this compiler runs, if one was found, and whether it runs without bubblewrap. */
  describe(): { readonly toolchain: Toolchain | undefined; readonly insecure: boolean } {
    return { toolchain: this.toolchain, insecure: !this.options.bwrap && this.options.insecureCompile === true };
  }

  /** Why Compile cannot work on this host (missing toolchain, linker, std or bubblewrap), or undefined. */
  get unavailable(): SandboxError | undefined {
    return this.unavailableReason ?? this.sandboxMissing();
  }

  /** COMPILE_SANDBOX_MISSING when rustc cannot run hermetically and the operator did not allow otherwise. */
  private sandboxMissing(): SandboxError | undefined {
    if (this.options.bwrap || this.options.insecureCompile) return undefined;
    return new SandboxError(
      "COMPILE_SANDBOX_MISSING",
      "bubblewrap is not available to isolate rustc; install it (apt-get install bubblewrap) or start sandboxd with --insecure-compile",
    );
  }

  /**
   * Builds {@link LINK_PROBE_SOURCE} exactly as scripts are built (hermetic,
   * same flags, no SDK) and returns what is missing if it fails. A probe that
   * times out on a busy host proves nothing, so it does not disable Compile.
   */
  private async buildProbe(toolchain: Toolchain): Promise<ToolchainProblem | undefined> {
    const dir = await mkdtemp(path.join(tmpdir(), WORK_DIR_PREFIX));
    try {
      await writeFile(path.join(dir, SOURCE_FILE), LINK_PROBE_SOURCE);
      const run = await this.runRustc(dir, [...RUSTC_FLAGS, "--target", toolchain.target, "-o", "main.wasm", SOURCE_FILE]);
      if (run.exitCode === 0) {
        this.logger.debug("toolchain probe built and linked a module", { rustcMs: run.rustcMs });
        return undefined;
      }
      // Out of time or of the memory budget: the host or the operator's budgets, not a missing package.
      if (run.timedOut || run.isCanceled || OUT_OF_MEMORY_RE.test(run.stderr)) {
        this.logger.warn("the toolchain probe did not finish within the compile budgets; Compile stays enabled", { rustcMs: run.rustcMs });
        return undefined;
      }
      const diagnostics = parseRustcDiagnostics(run.stderr, { userFile: SOURCE_FILE, lineOffset: 0, displayName: SOURCE_FILE });
      const known = toolchainProblemIn(diagnostics, toolchain.target);
      if (known) return known;
      this.logger.error("the toolchain probe failed", { exitCode: run.exitCode, signal: run.signal, stderr: run.stderr.slice(-4096) });
      return unrecognisedToolchainProblem(toolchain.target);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The SDK linked into scripts, if any. */
  get sdk(): SdkArtifacts | undefined {
    return this.options.sdk;
  }

  /**
   * Compiles source (or finds its module, or its earlier failure, in the cache). Identical
   * concurrent compiles run rustc once. `onCompiling` hears whether rustc will run before it does.
   */
  async compile(source: string, signal?: AbortSignal, onCompiling?: OnCompiling): Promise<CompileResult> {
    if (source.trim() === "") throw new SandboxError("EMPTY_SOURCE", "source is empty");
    if (Buffer.byteLength(source) > MAX_SOURCE_BYTES) {
      throw new SandboxError("SOURCE_TOO_LARGE", `source exceeds ${MAX_SOURCE_BYTES} bytes`);
    }
    const unavailable = this.unavailable;
    if (unavailable) throw unavailable;
    const toolchain = this.toolchain;
    if (!toolchain) throw toolchainMissing(NO_TOOLCHAIN);
    const moduleId = this.moduleIdFor(source, toolchain);
    this.blocklist.check(moduleId);
    const hit = await this.cached(moduleId);
    onCompiling?.(hit !== undefined);
    if (hit) return hit;
    const result = await this.flights.do(
      moduleId,
      (flightSignal) => this.queue.run(() => this.build(source, moduleId, toolchain, flightSignal), flightSignal),
      signal,
    );
    // Blocked while rustc ran: the caller must not learn of it as a module it may use.
    if (result.ok) this.blocklist.check(moduleId);
    return result;
  }

  /** The cached result of a source (its module or its failure), if a verified, current entry exists. */
  private async cached(moduleId: string): Promise<CompileResult | undefined> {
    const hit = await this.store.lookup(moduleId);
    return hit ? decodeMeta(moduleId, hit.meta) : undefined;
  }

  /** module_id of a source: SHA-256 over everything that determines the module. */
  moduleIdFor(source: string, toolchain: Toolchain): string {
    return sha256Hex(
      CACHE_KEY_VERSION,
      source,
      toolchain.version,
      toolchain.target,
      RUSTC_FLAGS.join(" "),
      this.options.sdk?.sdkHash ?? "no-sdk",
    );
  }

  /** The toolchain a module built now is recorded with: everything in its id but the source. */
  toolchainRecord(toolchain: Toolchain): ToolchainRecord {
    const sdkHash = this.options.sdk?.sdkHash;
    return {
      fingerprint: sha256Hex(CACHE_KEY_VERSION, toolchain.version, toolchain.target, RUSTC_FLAGS.join(" "), sdkHash ?? "no-sdk"),
      description: `${toolchain.version.split("\n")[0] ?? "rustc"}, ${toolchain.target}, ${sdkHash ? `sdk ${sdkHash.slice(0, 12)}` : "no sdk"}`,
    };
  }

  private async build(source: string, moduleId: string, toolchain: Toolchain, signal: AbortSignal): Promise<CompileResult> {
    // Another flight (or a daemon sharing the cache) may have finished it while we queued.
    const hit = await this.cached(moduleId);
    if (hit) return hit;
    const provenance: ProvenanceFields = { origin: "source", createdUnixMs: Date.now(), toolchain: this.toolchainRecord(toolchain) };
    const dir = await mkdtemp(path.join(tmpdir(), WORK_DIR_PREFIX));
    try {
      await writeFile(path.join(dir, SOURCE_FILE), source);
      const args = [...RUSTC_FLAGS, "--target", toolchain.target, ...(this.options.sdk?.rustcArgs ?? []), "-o", "main.wasm", SOURCE_FILE];
      const timeoutMs = this.options.timeoutMs ?? COMPILE_TIMEOUT_MS;
      const memoryLimitBytes = this.options.memoryLimitBytes ?? COMPILE_MEMORY_LIMIT_BYTES;
      const result = await this.runRustc(dir, args, signal);
      const rustcMs = result.rustcMs;
      if (result.isCanceled) throw new SandboxError("CANCELLED", "compile cancelled");
      if (result.timedOut) {
        throw new SandboxError("COMPILE_TIMEOUT", `rustc exceeded its wall-clock budget of ${timeoutMs} ms (a macro or const-eval bomb?)`, {
          metadata: { limit: "wall_clock", limit_ms: String(timeoutMs) },
        });
      }
      const parsed = parseRustcDiagnostics(result.stderr, { userFile: SOURCE_FILE, lineOffset: 0, displayName: SOURCE_FILE });
      const diagnostics = limitDiagnostics(parsed, MAX_DIAGNOSTICS_BYTES);
      const fixedSource = applyMachineApplicableFixes(source, rustcMessages(result.stderr), SOURCE_FILE, MAX_SOURCE_BYTES);
      if (result.exitCode !== 0) {
        if (OUT_OF_MEMORY_RE.test(result.stderr) && !hasErrors(parsed)) {
          throw new SandboxError("COMPILE_TIMEOUT", `rustc exceeded its memory budget of ${memoryLimitBytes} bytes`, {
            metadata: { limit: "memory", limit_bytes: String(memoryLimitBytes) },
          });
        }
        // The linker or std went missing since the start-up probe: the host's fault, not the script's.
        const missing = toolchainProblemIn(parsed, toolchain.target);
        if (missing) {
          this.logger.error(`Compile failed: ${missing.message}`, { install: missing.packages.join(" ") });
          throw toolchainMissing(missing);
        }
        if (!hasErrors(parsed)) {
          // Not a verdict on the source: the sandbox or rustc itself broke. Never blame the user's code.
          this.logger.error("rustc failed without diagnostics", {
            exitCode: result.exitCode,
            signal: result.signal,
            stderr: result.stderr.slice(-4096),
          });
          throw new SandboxError("INTERNAL", "rustc failed without reporting a diagnostic; the daemon log has its output");
        }
        this.logger.debug("compile failed", { diagnostics: parsed.length, rustcMs });
        if (failedOnSource(parsed))
          await this.store.put(moduleId, new Uint8Array(0), encodeMeta({ ok: false, diagnostics, fixedSource, ...provenance }));
        return { ok: false, moduleId: "", cacheHit: false, diagnostics, fixedSource };
      }
      const wasm = await readFile(path.join(dir, "main.wasm"));
      await this.store.put(moduleId, wasm, encodeMeta({ ok: true, diagnostics, fixedSource, ...provenance }));
      this.logger.debug("compiled", { moduleId, bytes: wasm.byteLength, rustcMs });
      return { ok: true, moduleId, cacheHit: false, diagnostics, fixedSource };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Runs rustc on `args` in `dir`, hermetically when bubblewrap is there, within the compile budgets. */
  private async runRustc(dir: string, args: string[], signal?: AbortSignal): Promise<RustcRun> {
    const toolchain = this.toolchain;
    if (!toolchain) throw toolchainMissing(NO_TOOLCHAIN);
    const memoryLimitBytes = this.options.memoryLimitBytes ?? COMPILE_MEMORY_LIMIT_BYTES;
    const cmd: HermeticCommand = this.options.bwrap
      ? hermeticCommand({
          bwrap: this.options.bwrap,
          rustc: toolchain.rustc,
          sysroot: toolchain.sysroot,
          workDir: dir,
          readOnlyPaths: this.options.sdk?.readOnlyPaths ?? [],
          args,
          memoryLimitBytes,
        })
      : insecureCommand({ rustc: toolchain.rustc, args, memoryLimitBytes });
    const execa = await loadExeca();
    const started = performance.now();
    const result = await execa(cmd.file, cmd.args, {
      cwd: dir,
      env: cmd.env,
      extendEnv: false,
      reject: false,
      timeout: this.options.timeoutMs ?? COMPILE_TIMEOUT_MS,
      ...(signal ? { cancelSignal: signal } : {}),
      forceKillAfterDelay: RUSTC_KILL_GRACE_MS,
      stdin: "ignore",
      maxBuffer: RUSTC_MAX_STDERR_BYTES,
    });
    return {
      exitCode: result.exitCode,
      signal: result.signal,
      stderr: result.stderr,
      isCanceled: result.isCanceled,
      timedOut: result.timedOut,
      rustcMs: performance.now() - started,
    };
  }

  /**
   * Registers a precompiled WASI preview1 command module; its id is the SHA-256 of its bytes. Compiling
   * and storing up to 64 MiB is as heavy as a small rustc run, so uploads share the compile queue's bounds.
   */
  async register(wasm: Uint8Array, signal?: AbortSignal): Promise<CompileResult> {
    if (wasm.byteLength === 0) throw new SandboxError("INVALID_WASM", "wasm is empty");
    if (wasm.byteLength > MAX_WASM_BYTES)
      throw new SandboxError("WASM_TOO_LARGE", `module is ${wasm.byteLength} bytes; the limit is ${MAX_WASM_BYTES}`);
    const moduleId = createHash("sha256").update(wasm).digest("hex");
    this.blocklist.check(moduleId);
    if (await this.store.lookup(moduleId)) return { ok: true, moduleId, cacheHit: true, diagnostics: [], fixedSource: "" };
    return this.queue.run(() => this.validateAndStore(moduleId, wasm), signal);
  }

  private async validateAndStore(moduleId: string, wasm: Uint8Array): Promise<CompileResult> {
    let module: WebAssembly.Module;
    try {
      module = await WebAssembly.compile(wasm as Uint8Array<ArrayBuffer>);
    } catch (e: unknown) {
      throw new SandboxError("INVALID_WASM", `not a valid WebAssembly module: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const problems = validateCommandModule(module, wasm);
    if (problems.length > 0) throw new SandboxError("INVALID_WASM", `not a WASI preview1 command: ${problems.join("; ")}`);
    const provenance: ProvenanceFields = { origin: "upload", createdUnixMs: Date.now() };
    await this.store.put(moduleId, wasm, Buffer.from(JSON.stringify(provenance)));
    return { ok: true, moduleId, cacheHit: false, diagnostics: [], fixedSource: "" };
  }

  /**
   * The verified bytes of a stored module, or NOT_FOUND (a corrupt entry is evicted and reported as
   * not found; a cached compile failure has no module).
   */
  load(moduleId: string): Promise<Uint8Array> {
    return loadStoredModule(this.store, moduleId);
  }
}

/**
 * The verified bytes of a module in `store`, or NOT_FOUND (a corrupt entry is evicted and reported as
 * not found; a cached compile failure has no module). Needs no toolchain: a cached module runs while
 * the compiler is still being set up.
 */
export async function loadStoredModule(store: ModuleStore, moduleId: string): Promise<Uint8Array> {
  const bytes = await store.get(moduleId);
  if (!bytes || bytes.byteLength === 0) throw new SandboxError("MODULE_NOT_FOUND", `no module ${moduleId} in the cache; compile it first`);
  return bytes;
}
