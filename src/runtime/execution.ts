import type { WasiDenial, WasiMount } from "./wasi/types.js";

/** How a run ended, as the core reports it (the gRPC layer maps these to the Outcome enum). */
export type Outcome = "exited" | "trap" | "timeout" | "memory_limit" | "output_limit" | "cancelled" | "fuel_exhausted";

/** A directory the guest may see, already verified against the policy and the operator's roots (the one mount shape). */
export type RunMount = WasiMount;

/** A guest operation the policy refused (the one denial shape). */
export type Denial = WasiDenial;

/**
 * Live events of a streaming run, in the order the guest produced them. An
 * output hook may return a promise that settles once its consumer has taken
 * the chunk: until then the bytes count against the run's stream window, so a
 * slow reader makes the guest wait instead of the daemon buffer without bound.
 */
export interface RunListener {
  onStdout?(chunk: Uint8Array): Promise<void> | void;
  onStderr?(chunk: Uint8Array): Promise<void> | void;
  onDenial?(denial: Denial): void;
}

/** The result of one execution. With a listener, stdout/stderr are empty: they went to it. */
export interface RunResult {
  readonly outcome: Outcome;
  readonly exitCode: number;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  readonly message: string;
  readonly denials: readonly Denial[];
  readonly durationUs: number;
  /** Fuel the guest consumed (counted as wasmtime counts it); 0 when the run was not metered. */
  readonly fuelConsumed: number;
  /** Denials the policy made, including those beyond the returned list. */
  readonly denialCount: number;
}
