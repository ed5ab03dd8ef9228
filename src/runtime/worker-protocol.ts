import type { Denial, RunMount } from "./execution.js";
import type { HttpChannelEnd } from "./net/http-channel.js";
import type { WasiHostOptions, WasiRunResult } from "./wasi/host.js";

/** What the guest's run is given, as the pool receives it and as the worker gets it. */
export interface GuestParameters extends Pick<WasiHostOptions, "env" | "stdin" | "memoryLimitBytes" | "memory" | "maxOutputBytes"> {
  /** Bytes the run may add to its writable mounts. */
  readonly maxWriteBytes: number;
  /** Files, directories and links the run may create. */
  readonly maxCreatedEntries: number;
  /** Fuel the run may consume; 0 = not metered (moduleKey then names the uninstrumented module). */
  readonly fuelLimit: number;
  readonly moduleKey: string;
  /** Full argv, argv[0] included (the host's `args`). */
  readonly argv: readonly string[];
  readonly mounts: readonly RunMount[];
}

/** How a run ended in the worker: as the WASI host saw it, or out of fuel. */
export type WorkerRunResult = WasiRunResult | { readonly outcome: "fuel_exhausted"; readonly message: string };

/** Main thread → worker: run one module. */
export interface RunMessage extends GuestParameters {
  readonly type: "run";
  readonly runId: number;
  /** Sent only the first time this worker sees moduleKey; the worker keeps it. */
  readonly module?: WebAssembly.Module;
  /**
   * Present for StreamOutput: output is posted as it is written, and the worker waits while too much
   * of it is untaken (see stream-window.ts). Absent for Execute: output comes back with the result.
   */
  readonly streamWindow?: Int32Array;
  /**
   * Present when the policy grants network: the worker's end of the run's HTTP channel (its port is
   * transferred with this message), and the run's time budget, which bounds every wait for a response.
   */
  readonly http?: { readonly channel: HttpChannelEnd; readonly timeoutMs: number };
}

/** Main thread → worker: forget a module the main thread evicted. */
export interface EvictMessage {
  readonly type: "evict";
  readonly moduleKey: string;
}

/** Main thread → worker. */
export type ToWorker = RunMessage | EvictMessage;

/** Worker → main thread. */
export type FromWorker =
  | { readonly type: "ready" }
  | { readonly type: "output"; readonly runId: number; readonly fd: 1 | 2; readonly data: Uint8Array }
  | { readonly type: "denial"; readonly runId: number; readonly denial: Denial }
  | {
      readonly type: "done";
      readonly runId: number;
      readonly result: WorkerRunResult;
      /** Fuel the guest consumed; 0 when the run was not metered. */
      readonly fuelConsumed: number;
      readonly stdout: Uint8Array;
      readonly stderr: Uint8Array;
      readonly denials: readonly Denial[];
      readonly deniedBeyondCap: number;
      readonly durationUs: number;
    };
