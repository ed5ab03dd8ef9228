/**
 * A promise-based client for SandboxService, used by the demo, the benchmarks
 * and the tests. Other languages generate their own from the proto.
 */
import { credentials, Metadata, type CallOptions, type ChannelOptions, type ServiceError } from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import {
  SandboxServiceClient,
  type CompileRequest,
  type CompileResponse,
  type ExecuteEvent,
  type ExecuteRequest,
  type ExecuteResponse,
  type InfoResponse,
} from "../gen/grpc/sandbox/v1/sandbox.js";

/** One streamed event with its arrival time since the call started. */
export interface TimedEvent {
  readonly event: ExecuteEvent;
  readonly atMs: number;
}

/** Promise wrappers over the generated client. */
export interface SandboxClient {
  readonly raw: SandboxServiceClient;
  /** Missing fields of the request take their proto defaults. */
  compile(request: Partial<CompileRequest>, options?: Partial<CallOptions>): Promise<CompileResponse>;
  /** Missing fields of the request take their proto defaults. */
  execute(request: Partial<ExecuteRequest>, options?: Partial<CallOptions>): Promise<ExecuteResponse>;
  /** Runs StreamOutput to its end, collecting every event with its arrival time. */
  stream(request: Partial<ExecuteRequest>, options?: Partial<CallOptions>): Promise<TimedEvent[]>;
  /** The daemon's version, toolchain, limits, keys, cache and workers. */
  info(options?: Partial<CallOptions>): Promise<InfoResponse>;
  close(): void;
}

/** Connects to a daemon at a grpc-js target such as `unix:///run/sandboxd/sandboxd.sock`. */
export function connect(target: string, options: ChannelOptions = {}): SandboxClient {
  const raw = new SandboxServiceClient(target, credentials.createInsecure(), options);
  return {
    raw,
    compile: (request, options = {}) =>
      new Promise((resolve, reject) =>
        raw.compile(compileRequest(request), new Metadata(), options, (e, v) => (e ? reject(e) : resolve(v))),
      ),
    execute: (request, options = {}) =>
      new Promise((resolve, reject) =>
        raw.execute(executeRequest(request), new Metadata(), options, (e, v) => (e ? reject(e) : resolve(v))),
      ),
    stream: (request, options = {}) =>
      new Promise((resolve, reject) => {
        const started = performance.now();
        const events: TimedEvent[] = [];
        const call = raw.streamOutput(executeRequest(request), options);
        call.on("data", (event: ExecuteEvent) => events.push({ event, atMs: performance.now() - started }));
        call.on("error", (e: ServiceError) => reject(e));
        call.on("end", () => resolve(events));
      }),
    info: (options = {}) => new Promise((resolve, reject) => raw.info({}, new Metadata(), options, (e, v) => (e ? reject(e) : resolve(v)))),
    close: () => raw.close(),
  };
}

/** A CompileRequest with proto defaults for every field not given. */
export function compileRequest(partial: Partial<CompileRequest>): CompileRequest {
  return { input: undefined, repair: false, ...partial };
}

/** An ExecuteRequest with proto defaults for every field not given. */
export function executeRequest(partial: Partial<ExecuteRequest>): ExecuteRequest {
  return { target: undefined, stdin: Buffer.alloc(0), args: [], env: new Map(), policy: undefined, ...partial };
}
