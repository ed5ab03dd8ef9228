/**
 * The core facade: compile, then run under a verified grant. It knows nothing
 * of gRPC; src/grpc/ translates requests and results to and from it.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";
import { SandboxError } from "./errors/sandbox-error.js";
import { elapsedUs } from "./elapsed.js";
import type { Logger } from "./logger.js";
import { MAX_STDIN_BYTES, MAX_UNARY_OUTPUT_BYTES } from "./limits.js";
import { checkArgsAndEnv, DEFAULT_REQUEST_LIMITS, type RequestLimits } from "./request-limits.js";
import { ModuleAdmin } from "./admin/module-admin.js";
import { MODULE_ID_PATTERN, ModuleStore } from "./cache/module-store.js";
import { Compiler, loadStoredModule, type CompileResult, type CompilerSettings } from "./compiler/compiler.js";
import { RemoteCache, type RemoteCacheSettings } from "./cache/remote-cache.js";
import type { Diagnostic } from "./compiler/diagnostics.js";
import { repairSource, type RepairResult } from "./compiler/repair.js";
import type { ToolchainProbe } from "./compiler/toolchain.js";
import {
  authorize,
  bindToModule,
  type Grant,
  type PolicyCeilings,
  type PolicyDefaults,
  type SignedPolicyInput,
} from "./policy/authorize.js";
import { ModuleBlocklist } from "./policy/module-blocklist.js";
import type { TrustedKeys } from "./policy/trusted-keys.js";
import type { Denial, RunListener, RunResult } from "./runtime/execution.js";
import { BufferBudget } from "./runtime/buffer-budget.js";
import { ModuleRegistry } from "./runtime/module-registry.js";
import { memoryForRun, WASM_PAGE_BYTES } from "./runtime/wasm/memory-cap.js";
import { WorkerPool } from "./runtime/pool.js";
import type { SignedReceipt } from "./gen/pb/sandbox/v1/sandbox.js";
import { argsEnvSha256, OutputDigest, PROTO_OUTCOMES, sha256, type ReceiptSigner } from "./receipt/receipt.js";
import { SANDBOXD_VERSION } from "./version.js";
import type { CidrRange } from "./runtime/net/address-rules.js";

/** Warm workers when the operator does not say: enough for the cores plus guests that sleep. */
export const DEFAULT_WORKERS = Math.max(4, availableParallelism());

/** What the core is built from. */
export interface SandboxOptions {
  /** What toolchain detection found, or its detection still under way (the daemon serves meanwhile). */
  readonly toolchain: ToolchainProbe | Promise<ToolchainProbe>;
  /** Called whenever a call needs the compiler, so a probe deferred past start-up begins at once. */
  readonly requestToolchain?: () => void;
  readonly cacheDir: string;
  readonly workers: number;
  /** Executions allowed to wait for a worker. */
  readonly maxQueuedExecutions: number;
  /** Bytes held for queued stdin and untaken streamed output, across all calls. */
  readonly maxBufferedBytes: number;
  /** Total size of the compiled modules kept in memory. */
  readonly moduleMemoryMaxBytes: number;
  /** Files, directories and links one run may create in its writable mounts. */
  readonly maxCreatedEntries: number;
  readonly keys: TrustedKeys;
  readonly allowUnsigned: boolean;
  readonly ceilings: PolicyCeilings;
  readonly defaults: PolicyDefaults;
  /** Special-purpose address ranges outbound requests may reach after all (--allow-private-network). */
  readonly privateNetworks: readonly CidrRange[];
  readonly logger: Logger;
  /** Compiler settings (hermetic/insecure, rustc budgets, queue); defaults when absent. */
  readonly compile?: CompilerSettings;
  /** Size cap of the on-disk module cache. */
  readonly cacheMaxBytes?: number;
  /** Caps on a request's args and env; defaults when absent. */
  readonly requestLimits?: RequestLimits;
  /** The module cache shared with other hosts (Redis); none when absent. */
  readonly remoteCache?: RemoteCacheSettings;
  /** Signs a receipt of every execution; none are made without it. */
  readonly receiptSigner?: ReceiptSigner;
}

/** Input of a Compile: Rust source (to repair if it fails, when `repair` says so) or a precompiled module. */
export type CompileInput = { readonly source: string; readonly repair?: boolean } | { readonly wasm: Uint8Array };

/** Result of a Compile: the compiler's, with a repair when one was asked for and found. */
export type CompileOutcome = CompileResult & { readonly repair?: RepairResult };

/** Input of an Execute, already decoded from the wire. */
export interface ExecuteInput {
  readonly target: { readonly moduleId: string } | { readonly source: string };
  readonly stdin: Uint8Array;
  readonly args: readonly string[];
  /** Exactly the guest's environment: a Map, so that no key (`__proto__` included) is special. */
  readonly env: ReadonlyMap<string, string>;
  readonly policy: SignedPolicyInput | undefined;
}

/** Hooks of a streaming execution; with them, output goes to the hooks instead of into the result. */
export interface ExecuteHooks extends RunListener {
  /** Called for a source target once it is known whether rustc must run, before it does. */
  onCompiling?(cacheHit: boolean): void;
  /** Called once the module is known and the run is about to start; never when the source did not compile. */
  onStarted?(executionId: string, moduleId: string): void;
}

/**
 * Result of an Execute: a run result, or a compile error for source targets. `durationUs` is the
 * guest's run time alone (0 when it never ran); `compileDurationUs` the time spent compiling.
 */
export type ExecuteResult = (
  | (RunResult & {
      readonly moduleId: string;
      readonly diagnostics: readonly Diagnostic[];
      readonly compileDurationUs: number;
      readonly audit: ExecuteAudit;
    })
  | {
      readonly outcome: "compile_error";
      readonly moduleId: "";
      readonly diagnostics: readonly Diagnostic[];
      readonly durationUs: 0;
      readonly compileDurationUs: number;
      readonly audit: ExecuteAudit;
    }
) & {
  /** The signed receipt of this execution, when the daemon has a receipt key. */
  readonly receipt?: SignedReceipt;
};

/** What an operator's audit log and metrics say about a run, beside its result. */
export interface ExecuteAudit {
  /** The id `started` carried; empty when the run never started (a compile error). */
  readonly executionId: string;
  /** The policy's id and signing key ("" for an unsigned run). */
  readonly policyId: string;
  readonly keyId: string;
  /** For a source target, whether the compiled module (or failure) came from the cache. */
  readonly compileCacheHit: boolean | undefined;
  /** Whether the compiled module was already in memory (undefined when no module was needed). */
  readonly memoryHit: boolean | undefined;
}

/** What the Info RPC reports: the daemon's effective settings and its state now. */
export interface SandboxInfo {
  readonly toolchain: {
    readonly rustc: string;
    readonly version: string;
    readonly target: string;
    readonly unavailableReason: string;
    readonly insecureCompile: boolean;
  };
  readonly defaults: PolicyDefaults;
  readonly ceilings: PolicyCeilings;
  readonly trustedKeyIds: readonly string[];
  readonly allowUnsigned: boolean;
  readonly cache: { readonly entries: number; readonly bytes: number; readonly maxBytes: number };
  readonly workers: { readonly workers: number; readonly busy: number; readonly queued: number; readonly maxQueued: number };
}

/** The daemon's core: compiler, module cache, policy checks and the worker pool. */
export class Sandbox {
  /** The operator's module management (served on the admin socket only). */
  readonly modules: ModuleAdmin;

  private constructor(
    private readonly options: SandboxOptions,
    /**
     * Ready once the toolchain probe (rustc start-ups, the bubblewrap check)
     * is done: the daemon serves before that, and a call needing the compiler
     * waits for it, so start-up costs no rustc time.
     */
    private readonly compiler: Promise<Compiler>,
    /** The module cache: a cached module runs without waiting for the compiler. */
    private readonly store: ModuleStore,
    private readonly blocklist: ModuleBlocklist,
    private readonly registry: ModuleRegistry,
    private readonly pool: WorkerPool,
    private readonly remote: RemoteCache | undefined,
  ) {
    this.modules = new ModuleAdmin(store, registry, blocklist);
  }

  /** Builds the core; the compiler finishes setting up in the background, and the workers start with startWorkers(). */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    const pool = new WorkerPool({
      workers: options.workers,
      maxQueued: options.maxQueuedExecutions,
      budget: new BufferBudget(options.maxBufferedBytes),
      logger: options.logger,
    });
    let remote: RemoteCache | undefined;
    try {
      // Before anything can compile or run: an unreadable blocklist refuses the start.
      const blocklist = await ModuleBlocklist.open(options.cacheDir);
      const store = await ModuleStore.open(options.cacheDir, {
        ...(options.cacheMaxBytes ? { maxBytes: options.cacheMaxBytes } : {}),
        warn: (message, fields) => options.logger.warn(message, fields),
      });
      if (options.remoteCache) remote = await RemoteCache.open(options.remoteCache, options.logger);
      const compileSettings: CompilerSettings = { ...options.compile, ...(remote ? { remote } : {}) };
      const compiler = Promise.resolve(options.toolchain).then((toolchain) =>
        Compiler.create(toolchain, store, options.logger, compileSettings, blocklist),
      );
      // Calls that need it will see the failure; the operator must see it now.
      compiler.catch((e: unknown) => options.logger.error("the compiler failed to initialise", { error: String(e) }));
      return new Sandbox(
        options,
        compiler,
        store,
        blocklist,
        new ModuleRegistry((key) => pool.evict(key), options.moduleMemoryMaxBytes),
        pool,
        remote,
      );
    } catch (e: unknown) {
      await remote?.close();
      await pool.close();
      throw e;
    }
  }

  /**
   * Starts the workers without waiting for them: the daemon serves meanwhile (their boot would
   * compete with its own start for the cores), and runs wait for the first ready one. A worker that
   * fails to start is logged and started again by the pool.
   */
  startWorkers(): void {
    this.pool.start().catch(() => undefined);
  }

  /**
   * Why Compile cannot work on this host (TOOLCHAIN_MISSING naming what to
   * install, COMPILE_SANDBOX_MISSING), known once the start-up probe is done;
   * undefined when it can.
   */
  compileUnavailable(): Promise<SandboxError | undefined> {
    return this.compiler.then(
      (c) => c.unavailable,
      (e: unknown) => SandboxError.from(e),
    );
  }

  /** Compiles source (repairing it if asked and it fails) or registers a precompiled module. */
  async compile(input: CompileInput, signal?: AbortSignal): Promise<CompileOutcome> {
    const compiler = await this.needCompiler();
    const result = "source" in input ? await compiler.compile(input.source, signal) : await compiler.register(input.wasm, signal);
    if (result.cacheHit) this.store.recordUse(result.moduleId);
    if (!("source" in input) || !input.repair || result.ok) return result;
    const logger = this.options.logger;
    const repair = await repairSource(
      input.source,
      result,
      (candidate, candidateSignal) => compiler.compile(candidate, candidateSignal),
      signal,
      {
        onStop: (why, rounds) => logger.debug("no repair", { why, rounds }),
      },
    );
    if (!repair) return result;
    if (repair.cacheHit) this.store.recordUse(repair.moduleId);
    logger.debug("repaired", { moduleId: repair.moduleId, rounds: repair.rounds, edits: repair.edits.length, cacheHit: repair.cacheHit });
    return { ...result, repair };
  }

  /**
   * Checks the policy, resolves the module (compiling source first) and runs it. Without hooks the
   * output comes back whole in the result, which must fit one response: a grant whose output cap
   * would not is refused before anything compiles or runs.
   */
  async execute(input: ExecuteInput, signal?: AbortSignal, hooks?: ExecuteHooks): Promise<ExecuteResult> {
    validateExecuteInput(input, this.options.requestLimits ?? DEFAULT_REQUEST_LIMITS);
    const grant = await authorize(input.policy, {
      keys: this.options.keys,
      allowUnsigned: this.options.allowUnsigned,
      ceilings: this.options.ceilings,
      defaults: this.options.defaults,
      nowMs: Date.now(),
    });
    if (hooks === undefined && grant.maxOutputBytes > MAX_UNARY_OUTPUT_BYTES) {
      throw new SandboxError(
        "UNARY_OUTPUT_TOO_LARGE",
        `max_output_bytes=${grant.maxOutputBytes} lets stdout and stderr outgrow one Execute response; ` +
          `Execute accepts at most ${MAX_UNARY_OUTPUT_BYTES}: use StreamOutput, which streams output in small events, or lower the cap`,
        { metadata: { max_output_bytes: String(grant.maxOutputBytes), max_unary_output_bytes: String(MAX_UNARY_OUTPUT_BYTES) } },
      );
    }
    const executionId = randomUUID();
    const receipts = this.options.receiptSigner && new ReceiptBuilder(this.options.receiptSigner, executionId, input, grant);
    let moduleId: string;
    let diagnostics: readonly Diagnostic[] = [];
    let compileDurationUs = 0;
    let compileCacheHit: boolean | undefined;
    const keyId = input.policy?.keyId ?? "";
    if ("source" in input.target) {
      const compileStarted = performance.now();
      const compiled = await (await this.needCompiler()).compile(input.target.source, signal, (cacheHit) => hooks?.onCompiling?.(cacheHit));
      compileDurationUs = elapsedUs(compileStarted);
      compileCacheHit = compiled.cacheHit;
      if (!compiled.ok) {
        const audit = { executionId: "", policyId: grant.policyId, keyId, compileCacheHit, memoryHit: undefined };
        const failed = {
          outcome: "compile_error",
          moduleId: "",
          diagnostics: compiled.diagnostics,
          durationUs: 0,
          compileDurationUs,
          audit,
        } as const;
        return receipts ? { ...failed, receipt: receipts.sign(failed, Date.now()) } : failed;
      }
      moduleId = compiled.moduleId;
      diagnostics = compiled.diagnostics;
    } else {
      moduleId = input.target.moduleId;
    }
    bindToModule(grant, moduleId);
    this.blocklist.check(moduleId);
    let memoryHit = true;
    const compiled = await this.registry.get(
      moduleId,
      () => {
        memoryHit = false;
        return loadStoredModule(this.store, moduleId, this.remote);
      },
      grant.fuelLimit > 0,
    );
    const memory = compiled.memory && memoryForRun(compiled.memory, grant.memoryLimitBytes);
    if (compiled.memory && !memory) {
      throw new SandboxError(
        "INVALID_WASM",
        `the module's initial memory (${compiled.memory.initialPages * WASM_PAGE_BYTES} bytes) exceeds the memory limit (${grant.memoryLimitBytes} bytes)`,
      );
    }
    this.store.recordUse(moduleId);
    hooks?.onStarted?.(executionId, moduleId);
    const startedAtMs = Date.now();
    const result = await this.pool.run({
      moduleKey: compiled.key,
      module: compiled.module,
      instantiateAhead: compiled.instantiateAhead,
      argv: [`${moduleId}.wasm`, ...input.args],
      env: input.env,
      stdin: input.stdin,
      mounts: grant.mounts,
      memoryLimitBytes: grant.memoryLimitBytes,
      ...(memory ? { memory } : {}),
      maxOutputBytes: grant.maxOutputBytes,
      maxWriteBytes: grant.maxWriteBytes,
      maxCreatedEntries: this.options.maxCreatedEntries,
      fuelLimit: grant.fuelLimit,
      timeoutMs: grant.timeoutMs,
      ...(hooks ? { listener: receipts ? receipts.watch(hooks) : hooks } : {}),
      ...(signal ? { signal } : {}),
      ...(grant.network ? { network: { grant: grant.network, opened: this.options.privateNetworks, policyId: grant.policyId } } : {}),
    });
    // Field by field rather than a spread: this runs once per call.
    const done: ExecuteResult = {
      outcome: result.outcome,
      exitCode: result.exitCode,
      stdout: result.stdout,
      stderr: result.stderr,
      message: result.message,
      denials: result.denials,
      durationUs: result.durationUs,
      fuelConsumed: result.fuelConsumed,
      denialCount: result.denialCount,
      moduleId,
      diagnostics,
      compileDurationUs,
      audit: { executionId, policyId: grant.policyId, keyId, compileCacheHit, memoryHit },
    };
    return receipts ? { ...done, receipt: receipts.sign(done, startedAtMs) } : done;
  }

  private needCompiler(): Promise<Compiler> {
    this.options.requestToolchain?.();
    return this.compiler;
  }

  /** The effective settings and the state of the cache and workers (waits for the toolchain probe). */
  async info(): Promise<SandboxInfo> {
    const compiler = await this.needCompiler().catch(() => undefined);
    const described = compiler?.describe();
    const unavailable = compiler ? compiler.unavailable : new SandboxError("INTERNAL", "the compiler failed to initialise");
    return {
      toolchain: {
        rustc: described?.toolchain?.rustc ?? "",
        // `rustc -vV` starts with the one line people quote ("rustc 1.63.0").
        version: described?.toolchain?.version.split("\n")[0] ?? "",
        target: described?.toolchain?.target ?? "",
        unavailableReason: unavailable?.message ?? "",
        insecureCompile: described?.insecure ?? false,
      },
      defaults: this.options.defaults,
      ceilings: this.options.ceilings,
      trustedKeyIds: this.options.keys.ids(),
      allowUnsigned: this.options.allowUnsigned,
      cache: this.store.stats(),
      workers: {
        workers: this.options.workers,
        busy: this.pool.busy,
        queued: this.pool.queued,
        maxQueued: this.options.maxQueuedExecutions,
      },
    };
  }

  /** Guests running now and executions waiting for a worker, for metrics (no waiting on anything). */
  workerLoad(): { readonly busy: number; readonly queued: number } {
    return { busy: this.pool.busy, queued: this.pool.queued };
  }

  /** Ids of the keys trusted now, sorted. */
  trustedKeyIds(): string[] {
    return this.options.keys.ids();
  }

  /** Replaces the trusted keys' contents from disk (SIGHUP). */
  reloadKeys(): Promise<void> {
    return this.options.keys.reload();
  }

  /** Stops the workers (running guests end as cancelled), writes the cache's usage counts and ends uploads to the shared cache (bounded). */
  async close(): Promise<void> {
    await this.pool.close();
    await this.store.close();
    await this.remote?.close();
  }
}

/**
 * Gathers what one execution's receipt records: digests of its input when it starts, of its output as
 * it streams (or whole at the end), then signs the lot. Exists only when the daemon has a receipt key.
 */
class ReceiptBuilder {
  private readonly stdinSha256: Uint8Array;
  private readonly argsEnvSha256: Uint8Array;
  private streamed: { readonly stdout: OutputDigest; readonly stderr: OutputDigest } | undefined;

  constructor(
    private readonly signer: ReceiptSigner,
    private readonly executionId: string,
    input: ExecuteInput,
    private readonly grant: Grant,
  ) {
    this.stdinSha256 = sha256(input.stdin);
    this.argsEnvSha256 = argsEnvSha256(input.args, input.env);
  }

  /** A listener that digests streamed output on its way to `hooks`, in the order the guest wrote it. */
  watch(hooks: ExecuteHooks): ExecuteHooks {
    const streamed = { stdout: new OutputDigest(), stderr: new OutputDigest() };
    this.streamed = streamed;
    return {
      onStdout: (chunk) => {
        streamed.stdout.update(chunk);
        return hooks.onStdout?.(chunk);
      },
      onStderr: (chunk) => {
        streamed.stderr.update(chunk);
        return hooks.onStderr?.(chunk);
      },
      ...(hooks.onDenial ? { onDenial: (denial: Denial) => hooks.onDenial?.(denial) } : {}),
    };
  }

  sign(result: ExecuteResult, startedAtMs: number): SignedReceipt {
    const ran = result.outcome !== "compile_error";
    return this.signer.sign({
      executionId: this.executionId,
      moduleId: result.moduleId,
      policyId: this.grant.policyId,
      policySha256: Buffer.from(this.grant.signedBy?.policySha256 ?? []),
      policyKeyId: this.grant.signedBy?.keyId ?? "",
      stdinSha256: Buffer.from(this.stdinSha256),
      argsEnvSha256: Buffer.from(this.argsEnvSha256),
      stdoutSha256: Buffer.from(this.streamed ? this.streamed.stdout.digest() : sha256(ran ? result.stdout : EMPTY)),
      stderrSha256: Buffer.from(this.streamed ? this.streamed.stderr.digest() : sha256(ran ? result.stderr : EMPTY)),
      outcome: PROTO_OUTCOMES[result.outcome],
      exitCode: result.outcome === "exited" ? result.exitCode : undefined,
      fuelConsumed: ran ? result.fuelConsumed : 0,
      fuelLimit: this.grant.fuelLimit,
      denialCount: ran ? result.denialCount : 0,
      startedAtUnixMs: startedAtMs,
      durationUs: result.durationUs,
      daemonVersion: SANDBOXD_VERSION,
    });
  }
}

const EMPTY = new Uint8Array(0);

function validateExecuteInput(input: ExecuteInput, limits: RequestLimits): void {
  // Before anything else: the rest of the checks walk every arg and variable.
  checkArgsAndEnv(input.args, input.env, limits);
  if ("moduleId" in input.target && !MODULE_ID_PATTERN.test(input.target.moduleId)) {
    throw new SandboxError("INVALID_MODULE_ID", "module_id must be 64 lowercase hex characters (a SHA-256)");
  }
  if (input.stdin.byteLength > MAX_STDIN_BYTES) {
    throw new SandboxError("STDIN_TOO_LARGE", `stdin exceeds ${MAX_STDIN_BYTES} bytes`);
  }
  // WASI passes args and env as NUL-terminated strings, and env entries as KEY=VALUE.
  for (const arg of input.args) {
    if (arg.includes("\0")) throw new SandboxError("INVALID_REQUEST", "args must not contain NUL characters");
  }
  for (const [key, value] of input.env) {
    if (key === "" || key.includes("=") || key.includes("\0") || value.includes("\0")) {
      throw new SandboxError(
        "INVALID_REQUEST",
        `env key ${JSON.stringify(key)} is invalid: keys must be non-empty with no '=' or NUL, values no NUL`,
      );
    }
  }
}
