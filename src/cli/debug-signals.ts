/**
 * SIGUSR1 and SIGUSR2 handled by the daemon itself. Without a handler, Node
 * answers SIGUSR1 by opening its inspector on 127.0.0.1:9229: an
 * unauthenticated debugger any local user can attach to and run code as the
 * daemon (Node 20 has no `--disable-sigusr1`). SIGUSR2's default kills the
 * process. Installing a listener takes each signal away from Node's default.
 */

/** The signals taken away from Node's defaults. */
export const DEBUG_SIGNALS = ["SIGUSR1", "SIGUSR2"] as const;

/** One of DEBUG_SIGNALS. */
export type DebugSignal = (typeof DEBUG_SIGNALS)[number];

/** Where signals go once the daemon can say something about them. */
export interface DebugSignalGuard {
  /** Sends every later SIGUSR1/SIGUSR2 to `onSignal`; before this, they are ignored. */
  report(onSignal: (signal: DebugSignal) => void): void;
}

/**
 * Installs the handlers. Call it before loading anything else: until it runs,
 * a SIGUSR1 opens the debugger, and loading the daemon's modules takes most of
 * a second. (The ~0.1 s of Node's own start-up before any of our code runs
 * remains; only `node --disable-sigusr1`, Node 22.14+, closes that.)
 */
export function guardDebugSignals(): DebugSignalGuard {
  let onSignal: ((signal: DebugSignal) => void) | undefined;
  for (const signal of DEBUG_SIGNALS) process.on(signal, () => onSignal?.(signal));
  return {
    report(handler) {
      onSignal = handler;
    },
  };
}
