/**
 * The daemon's Prometheus metrics (prom-client), in a registry of their own.
 * The gRPC ones carry go-grpc-prometheus's names and labels, so stock gRPC
 * dashboards work unchanged; the rest are sandboxd_*. No label ever holds a
 * module id, policy id, key id or path: each label has a small fixed set of values.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CallRecord } from "../grpc/call-audit.js";

/** go-grpc-prometheus's default buckets for grpc_server_handling_seconds, in seconds. */
const GRPC_HANDLING_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** rustc runs take from a fraction of a second to the compile timeout, in seconds. */
const COMPILE_BUCKETS_S = [0.001, 0.01, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];
/** Guests run from microseconds (a cached hello) to the timeout ceiling, in seconds. */
const GUEST_BUCKETS_S = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300];
/** Microseconds in a second. */
const US_PER_S = 1e6;

/** What the worker-pool gauges read at each scrape. */
export interface LoadSource {
  workerLoad(): { readonly busy: number; readonly queued: number };
}

/** One daemon's metrics. */
export class DaemonMetrics {
  /** The registry /metrics serves. */
  readonly registry = new Registry();
  private readonly grpcStarted: Counter<"grpc_type" | "grpc_service" | "grpc_method">;
  private readonly grpcHandled: Counter<"grpc_type" | "grpc_service" | "grpc_method" | "grpc_code">;
  private readonly grpcSeconds: Histogram<"grpc_type" | "grpc_service" | "grpc_method">;
  private readonly compiles: Counter<"result">;
  private readonly compileSeconds: Histogram<"cache">;
  private readonly cacheRequests: Counter<"layer" | "result">;
  private readonly executions: Counter<"method" | "outcome">;
  private readonly guestSeconds: Histogram;
  private readonly denials: Counter<"operation">;
  private readonly errors: Counter<"reason">;

  constructor(load: LoadSource, workers: number) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.grpcStarted = new Counter({
      name: "grpc_server_started_total",
      help: "Total number of RPCs started on the server.",
      labelNames: ["grpc_type", "grpc_service", "grpc_method"],
      registers,
    });
    this.grpcHandled = new Counter({
      name: "grpc_server_handled_total",
      help: "Total number of RPCs completed on the server, regardless of success or failure.",
      labelNames: ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
      registers,
    });
    this.grpcSeconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      labelNames: ["grpc_type", "grpc_service", "grpc_method"],
      buckets: GRPC_HANDLING_BUCKETS_S,
      registers,
    });
    this.compiles = new Counter({
      name: "sandboxd_compiles_total",
      help: "Compile calls and source targets by result: ok, error (did not compile), refused.",
      labelNames: ["result"],
      registers,
    });
    this.compileSeconds = new Histogram({
      name: "sandboxd_compile_duration_seconds",
      help: "Time to a compile result, by cache hit or miss.",
      labelNames: ["cache"],
      buckets: COMPILE_BUCKETS_S,
      registers,
    });
    this.cacheRequests = new Counter({
      name: "sandboxd_cache_requests_total",
      help: "Module cache lookups by layer (disk: compiled results, memory: instantiable modules) and result (hit, miss).",
      labelNames: ["layer", "result"],
      registers,
    });
    this.executions = new Counter({
      name: "sandboxd_executions_total",
      help: "Runs by method and outcome.",
      labelNames: ["method", "outcome"],
      registers,
    });
    this.guestSeconds = new Histogram({
      name: "sandboxd_guest_duration_seconds",
      help: "Guest run time, start to finish.",
      buckets: GUEST_BUCKETS_S,
      registers,
    });
    this.denials = new Counter({
      name: "sandboxd_denials_total",
      help: "Operations a mount refused, by WASI operation.",
      labelNames: ["operation"],
      registers,
    });
    this.errors = new Counter({
      name: "sandboxd_errors_total",
      help: "Calls refused or failed, by catalogued reason.",
      labelNames: ["reason"],
      registers,
    });
    new Gauge({ name: "sandboxd_workers", help: "Guest worker threads.", registers }).set(workers);
    new Gauge({
      name: "sandboxd_workers_busy",
      help: "Workers running a guest now.",
      registers,
      collect() {
        this.set(load.workerLoad().busy);
      },
    });
    new Gauge({
      name: "sandboxd_execution_queue_depth",
      help: "Executions waiting for a worker now.",
      registers,
      collect() {
        this.set(load.workerLoad().queued);
      },
    });
  }

  /** Counts one started RPC. */
  rpcStarted(type: string, service: string, method: string): void {
    this.grpcStarted.inc({ grpc_type: type, grpc_service: service, grpc_method: method });
  }

  /** Counts one finished RPC, its status code name as Go spells it, its latency, and the reason of a failure. */
  rpcHandled(type: string, service: string, method: string, code: string, seconds: number, reason: string | undefined): void {
    this.grpcHandled.inc({ grpc_type: type, grpc_service: service, grpc_method: method, grpc_code: code });
    this.grpcSeconds.observe({ grpc_type: type, grpc_service: service, grpc_method: method }, seconds);
    if (reason !== undefined) this.errors.inc({ reason });
  }

  /** Counts what one SandboxService call did. */
  observe(record: CallRecord): void {
    if (record.cacheHit !== undefined) {
      this.cacheRequests.inc({ layer: "disk", result: record.cacheHit ? "hit" : "miss" });
      this.compileSeconds.observe({ cache: record.cacheHit ? "hit" : "miss" }, record.compileDurationUs / US_PER_S);
    }
    if (record.memoryHit !== undefined) this.cacheRequests.inc({ layer: "memory", result: record.memoryHit ? "hit" : "miss" });
    if (record.method === "Compile") {
      this.compiles.inc({ result: record.outcome === "compiled" ? "ok" : record.outcome === "compile_failed" ? "error" : "refused" });
      return;
    }
    if (record.outcome === "refused") return;
    if (record.cacheHit !== undefined) this.compiles.inc({ result: record.outcome === "compile_error" ? "error" : "ok" });
    this.executions.inc({ method: record.method, outcome: record.outcome });
    if (record.outcome !== "compile_error") this.guestSeconds.observe(record.durationUs / US_PER_S);
    for (const operation of record.denials) this.denials.inc({ operation });
  }
}
