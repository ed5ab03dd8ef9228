import type { Denial, RunMount } from "./execution.js";
import type { HttpChannelEnd } from "./net/http-channel.js";
import type { WasiHostOptions, WasiRunResult } from "./wasi/types.js";
import type { MessagePort } from "node:worker_threads";

/** What the guest's run is given, as the pool receives it and as the worker gets it. */
export interface GuestParameters extends Pick<WasiHostOptions, "env" | "stdin" | "memoryLimitBytes" | "memory" | "maxOutputBytes"> {
  /** Bytes the run may add to its writable mounts. */
  readonly maxWriteBytes: number;
  /** Files, directories and links the run may create. */
  readonly maxCreatedEntries: number;
  /** Fuel the run may consume; 0 = not metered (moduleKey then names the uninstrumented module). */
  readonly fuelLimit: number;
  readonly moduleKey: string;
  /**
   * The worker may instantiate this module ahead of its next run while idle: false when the module
   * has a wasm start function, which would run then, outside any run and its time limit.
   */
  readonly instantiateAhead: boolean;
  /** Full argv, argv[0] included (the host's `args`). */
  readonly argv: readonly string[];
  readonly mounts: readonly RunMount[];
}

/**
 * How the main thread hands a run to an idle worker without waking its event loop: the worker
 * blocks in Atomics.wait on the control block; the main thread writes the request into the
 * request area (or, when it holds a module, a stream window or too many bytes, posts it on the
 * worker's request port) and flips the state. One block per worker, never reused by its successor.
 */
export interface RunChannel {
  /** Control cells (see CONTROL_*) followed by the request area. */
  readonly shared: SharedArrayBuffer;
  /** Receives requests that do not go through the area; read with receiveMessageOnPort. */
  readonly port: MessagePort;
}

/** Int32 cell: IDLE, or REQUEST_READY once a request is in place. */
export const CONTROL_STATE = 0;
/** Int32 cell: UTF-8 bytes of the JSON header in the area. */
export const CONTROL_HEADER_BYTES = 1;
/** Int32 cell: stdin bytes following the header in the area. */
export const CONTROL_STDIN_BYTES = 2;
/** Int32 cell: 1 when the request was posted on the request port instead. */
export const CONTROL_VIA_PORT = 3;
/** States of CONTROL_STATE. */
export const IDLE = 0;
/** A request waits for the worker. */
export const REQUEST_READY = 1;
/** Bytes before the request area (the control cells). */
export const REQUEST_AREA_OFFSET = 16;
/** Size of the request area: a typical request (JSON header, small stdin) fits, larger ones go through the port. */
export const REQUEST_AREA_BYTES = 64 * 1024;

/**
 * A request as the area carries it, as JSON: everything but stdin, which follows as raw bytes. JSON has
 * no Map, so env travels as its entries (a Map stringifies as `{}`: the guest would get no environment).
 */
export type RunHeader = Omit<RunMessage, "type" | "module" | "streamWindow" | "http" | "stdin" | "env"> & {
  readonly env: readonly (readonly [string, string])[];
};

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

/** Main thread → worker: forget a module the main thread evicted (posted on the worker's own port). */
export interface EvictMessage {
  readonly type: "evict";
  readonly moduleKey: string;
}

/** Main thread → worker, on its request port. */
export type ToWorker = RunMessage;

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
