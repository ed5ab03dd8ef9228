/**
 * Our `wasi_snapshot_preview1` host: one WasiHost serves one run. The calls live in calls/ by family, each a
 * function of the run's WasiContext; this file instantiates the guest, binds the calls as imports (where
 * every argument is taken as its u32 and every GuestErrno becomes the call's errno, in one place), links
 * `sandboxd_http_v1` (src/runtime/net/) next to them under the same rules, and says how the run ended.
 */
import { guestHttpImports } from "../net/guest-http.js";
import { HTTP_FUNCTIONS, HTTP_MODULE } from "../net/http-abi.js";
import { MEMORY_IMPORT_MODULE, MEMORY_IMPORT_NAME } from "../wasm/memory-cap.js";
import { WASI_MODULE } from "./abi.js";
import { argsEnvProcCalls } from "./calls/args-env-proc.js";
import { clocksPollCalls } from "./calls/clocks-poll.js";
import { directoryCalls } from "./calls/directory.js";
import { fdCalls } from "./calls/fd.js";
import { pathCalls } from "./calls/path.js";
import { sockCalls } from "./calls/sock.js";
import { timesCalls } from "./calls/times.js";
import { OutputLimit, ProcExit, TimeLimit, WasiContext } from "./context.js";
import { errnoForThrown } from "./errno.js";
import { PREVIEW1_FUNCTIONS } from "./functions.js";
import type { Preview1Calls, WasiHostOptions, WasiRunResult } from "./types.js";

/** Class of the exceptions a guest can `throw` (wasm exception handling is on by default in Node 20). */
const WasmException = (WebAssembly as unknown as { Exception?: abstract new (...args: never[]) => object }).Exception;

/** Every preview1 call of one run, from its families; `satisfies` makes a missing or mis-typed call a build error. */
function preview1Calls(ctx: WasiContext): Preview1Calls {
  return {
    ...argsEnvProcCalls(ctx),
    ...clocksPollCalls(ctx),
    ...fdCalls(ctx),
    ...directoryCalls(ctx),
    ...pathCalls(ctx),
    ...timesCalls(ctx),
    ...sockCalls(ctx),
  } satisfies Preview1Calls;
}

/** Name of one sandboxd_http_v1 function. */
type HttpFunction = keyof typeof HTTP_FUNCTIONS;
/** The sandboxd_http_v1 functions of one run. */
type HttpCalls = ReturnType<typeof guestHttpImports>;

/** An i32 argument as the u32 it stands for (i64 BigInts and absent arguments as they are). */
function u32(x: unknown): unknown {
  return typeof x === "number" ? x >>> 0 : x;
}

/**
 * Our own `wasi_snapshot_preview1` host. One instance serves one run: the worker builds it with the run's
 * options and calls run() (or runWith()) synchronously.
 */
export class WasiHost {
  private readonly ctx: WasiContext;
  /** This run's calls, reached through a {@link WasiImports}. */
  private readonly calls: Preview1Calls;
  /** This run's sandboxd_http_v1 functions (each request refused when the policy grants no network). */
  private readonly http: HttpCalls;

  constructor(private readonly options: WasiHostOptions) {
    const ctx = new WasiContext(options);
    this.ctx = ctx;
    this.calls = preview1Calls(ctx);
    this.http = guestHttpImports({
      transport: options.http,
      memory: () => ctx.mem.u8,
      onDenial: (denial) => options.onDenial(denial),
      flush: () => options.flush?.(),
      endRunOutOfTime: (message) => ctx.end(new TimeLimit(message)),
    });
  }

  /** Instantiates the module with our imports and runs `_start`. Never throws for anything the guest does;
   *  closes every host fd it opened before returning, however the run ended. */
  run(module: WebAssembly.Module): WasiRunResult {
    const imports = new WasiImports();
    return this.runWith(imports, () => {
      const namespaces: WebAssembly.Imports = { [WASI_MODULE]: imports.functions, [HTTP_MODULE]: imports.http };
      if (this.options.memory) namespaces[MEMORY_IMPORT_MODULE] = { [MEMORY_IMPORT_NAME]: new WebAssembly.Memory(this.options.memory) };
      return new WebAssembly.Instance(module, namespaces);
    });
  }

  /**
   * Runs `_start` of the instance `instantiate` returns: one made now, or one made in advance with
   * `imports` that has never run. The imports call this host until the run ends. Never throws for
   * anything the guest does; closes every host fd it opened before returning.
   */
  runWith(imports: WasiImports, instantiate: () => WebAssembly.Instance): WasiRunResult {
    imports.host = this;
    try {
      const fsError = this.ctx.openPreopens();
      if (fsError !== undefined) return { outcome: "trap", message: fsError };
      const instance = instantiate();
      const memory = instance.exports["memory"];
      const start = instance.exports["_start"];
      if (!(memory instanceof WebAssembly.Memory) || typeof start !== "function") {
        return { outcome: "trap", message: "the module must export `memory` and a `_start` function" };
      }
      this.ctx.mem.attach(memory);
      (start as () => void)();
      return this.ctx.ended !== undefined ? this.classify(this.ctx.ended) : { outcome: "exited", exitCode: 0 };
    } catch (e: unknown) {
      return this.classify(this.ctx.ended ?? e);
    } finally {
      imports.host = undefined;
      this.ctx.fds.closeAll();
    }
  }

  /**
   * Calls `name` for the guest: refuses once the guest has ended (see WasiContext.ended), and answers with the
   * errno of whatever GuestErrno or fs error the call threw. Anything else (the run ending, a host bug) is
   * thrown on to end the run.
   */
  call(
    name: keyof Preview1Calls,
    a: unknown,
    b: unknown,
    c: unknown,
    d: unknown,
    e: unknown,
    f: unknown,
    g: unknown,
    h: unknown,
    i: unknown,
  ): unknown {
    if (this.ctx.ended !== undefined) throw this.ctx.ended;
    this.ctx.mem.refresh();
    try {
      return (this.calls[name] as (...args: unknown[]) => unknown)(a, b, c, d, e, f, g, h, i);
    } catch (error: unknown) {
      const errno = errnoForThrown(error);
      if (errno === undefined) throw error;
      return errno;
    }
  }

  /** Calls sandboxd_http_v1's `name` for the guest, under the same rules as a preview1 call (it checks its own pointers). */
  callHttp(name: HttpFunction, a: number, b: number, c: number, d: number, e: number): number {
    if (this.ctx.ended !== undefined) throw this.ctx.ended;
    this.ctx.mem.refresh();
    return this.http[name](a, b, c, d, e);
  }

  private classify(e: unknown): WasiRunResult {
    if (e instanceof ProcExit) return { outcome: "exited", exitCode: e.code };
    if (e instanceof OutputLimit) return { outcome: "output_limit", message: e.message };
    if (e instanceof TimeLimit) return { outcome: "timeout", message: e.message };
    const message = e instanceof Error ? e.message : String(e);
    const limit = this.options.memoryLimitBytes;
    if (this.ctx.sawAllocFailure)
      return { outcome: "memory_limit", message: `guest memory allocation failed at the ${limit}-byte memory limit (${message})` };
    if (e instanceof RangeError && /out of memory|allocat/i.test(message)) {
      return { outcome: "memory_limit", message: `guest memory could not be allocated within the ${limit}-byte memory limit (${message})` };
    }
    if (e instanceof WebAssembly.RuntimeError || e instanceof RangeError) return { outcome: "trap", message };
    // The guest's own uncaught exception is its failure, not ours.
    if (WasmException !== undefined && e instanceof WasmException)
      return { outcome: "trap", message: "the guest threw a wasm exception that nothing caught" };
    // A host bug must not take the worker down either; report it as a trap with its text.
    return { outcome: "trap", message: `host error: ${message}` };
  }
}

/**
 * An import object for instances of any module, whose functions call the host of the run in progress
 * (see WasiHost.runWith). A worker keeps one for its life, so a run allocates no import closures and an
 * instance can be made before its run's host exists; an instance made with it runs at most once.
 */
export class WasiImports {
  /** The host whose run is in progress; undefined between runs. */
  host: WasiHost | undefined = undefined;
  /** The `wasi_snapshot_preview1` namespace to instantiate with. */
  readonly functions: WebAssembly.ModuleImports;
  /** The `sandboxd_http_v1` namespace to instantiate with. */
  readonly http: WebAssembly.ModuleImports;

  constructor() {
    const namespace: WebAssembly.ModuleImports = {};
    for (const name of PREVIEW1_FUNCTIONS) {
      // Every i32 parameter of preview1 is unsigned (pointers, lengths, fds, flags) but reaches JS signed: each
      // is taken as its u32 here, once. Fixed parameters rather than a rest array: no allocation per guest call
      // (no preview1 function takes more than nine).
      namespace[name] = (
        a: unknown,
        b: unknown,
        c: unknown,
        d: unknown,
        e: unknown,
        f: unknown,
        g: unknown,
        h: unknown,
        i: unknown,
      ): unknown => {
        const host = this.host;
        // Only a wasm start function can get here, while an instance is made ahead of its run.
        if (host === undefined) throw new WebAssembly.RuntimeError(`${name} called with no run in progress`);
        return host.call(name, u32(a), u32(b), u32(c), u32(d), u32(e), u32(f), u32(g), u32(h), u32(i));
      };
    }
    this.functions = namespace;
    const http: WebAssembly.ModuleImports = {};
    for (const name of Object.keys(HTTP_FUNCTIONS) as HttpFunction[]) {
      http[name] = (a: unknown, b: unknown, c: unknown, d: unknown, e: unknown): number => {
        const host = this.host;
        if (host === undefined) throw new WebAssembly.RuntimeError(`${name} called with no run in progress`);
        return host.callHttp(name, a as number, b as number, c as number, d as number, e as number);
      };
    }
    this.http = http;
  }
}
