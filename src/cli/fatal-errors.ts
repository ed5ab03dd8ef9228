/**
 * What the daemon does with an exception nobody caught or a rejection nobody
 * handled: log it, then exit non-zero so the supervisor (systemd's
 * Restart=on-failure) starts a clean daemon. After such a fault, some state the
 * daemon relies on (a key set, a slot's bookkeeping, an fd owner) may be half
 * updated; for a process that enforces a security boundary, serving on from
 * unknown state is worse than a restart.
 */
import type { Writable } from "node:stream";
import type { Logger } from "../logger.js";
import { FATAL_LOG_FLUSH_TIMEOUT_MS } from "../limits.js";

/** Exit status after a fatal fault: EX_SOFTWARE from sysexits.h (internal software error). */
export const FATAL_EXIT_CODE = 70;

/** The two process events that end the daemon. */
export type FatalKind = "uncaught exception" | "unhandled rejection";

/** What the fatal handler needs; the CLI passes the real process's, tests their own. */
export interface FatalErrorOptions {
  readonly logger: Logger;
  /** Where the logger writes: the exit waits (bounded) until it has taken every byte. */
  readonly output: Writable;
  readonly exit: (code: number) => void;
  readonly flushTimeoutMs?: number;
}

/**
 * Returns the handler for both events: it logs the fault with its stack once,
 * waits for the log to be written (at most `flushTimeoutMs`), then calls
 * `exit(FATAL_EXIT_CODE)`. A second fault while exiting is only logged: the
 * daemon is already on its way out.
 */
export function fatalErrorHandler(options: FatalErrorOptions): (kind: FatalKind, fault: unknown) => void {
  const { logger, output, exit } = options;
  const flushTimeoutMs = options.flushTimeoutMs ?? FATAL_LOG_FLUSH_TIMEOUT_MS;
  let exiting = false;
  return (kind, fault) => {
    try {
      logger.error(`${kind}; exiting with status ${FATAL_EXIT_CODE} so the supervisor restarts a clean daemon`, describeFault(fault));
    } catch {
      // The log itself failing must not keep the daemon alive.
    }
    if (exiting) return;
    exiting = true;
    let exited = false;
    const exitOnce = (): void => {
      if (exited) return;
      exited = true;
      clearTimeout(timer);
      exit(FATAL_EXIT_CODE);
    };
    // Not unref'd: this timer is what ends the process if the output never drains.
    const timer = setTimeout(exitOnce, flushTimeoutMs);
    // The logger hands its line to `output` a few ticks later (it is a stream pipeline).
    setImmediate(() => {
      if (output.writableNeedDrain) output.once("drain", exitOnce);
      else exitOnce();
    });
  };
}

/** Installs the handler for uncaughtException and unhandledRejection on this process. */
export function exitOnFatalErrors(logger: Logger): void {
  const handle = fatalErrorHandler({ logger, output: process.stderr, exit: (code) => process.exit(code) });
  process.on("uncaughtException", (e) => handle("uncaught exception", e));
  process.on("unhandledRejection", (e) => handle("unhandled rejection", e));
}

function describeFault(fault: unknown): { error: string; stack?: string } {
  if (fault instanceof Error) return { error: fault.message, ...(fault.stack ? { stack: fault.stack } : {}) };
  return { error: String(fault) };
}
