#!/usr/bin/env node
/**
 * `sandboxd`: the daemon's command line. Parses flags into a DaemonConfig,
 * starts the daemon, and maps signals: SIGTERM/SIGINT stop it cleanly, SIGHUP
 * reloads the trusted keys, SIGUSR1/SIGUSR2 log a status line (and never open
 * Node's debugger). An uncaught exception ends the process with a non-zero status.
 */
import type { Daemon } from "../daemon.js";
import { guardDebugSignals } from "./debug-signals.js";
import { sdNotify } from "./sd-notify.js";

async function main(): Promise<void> {
  // First, before the rest of the daemon loads (most of a second): until this
  // runs, SIGUSR1 would open an unauthenticated debugger on 127.0.0.1:9229.
  const debugSignals = guardDebugSignals();
  if (process.argv.slice(2).includes("--version")) {
    const { SANDBOXD_VERSION } = await import("../version.js");
    process.stdout.write(`sandboxd ${SANDBOXD_VERSION}\n`);
    return;
  }
  const [{ createLogger }, { Daemon }, { parseFlags, USAGE }, { exitOnFatalErrors }] = await Promise.all([
    import("../logger.js"),
    import("../daemon.js"),
    import("./daemon-flags.js"),
    import("./fatal-errors.js"),
  ]);
  const flags = parseFlags(process.argv.slice(2));
  if (flags instanceof Error) {
    process.stderr.write(`sandboxd: ${flags.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if ("help" in flags) {
    process.stdout.write(USAGE);
    return;
  }
  // If whoever reads our log goes away (a closed pipe), keep serving: a failed
  // log write must never turn into an exception loop or a dead daemon.
  process.stderr.on("error", () => undefined);
  process.stdout.on("error", () => undefined);
  const logger = createLogger(flags.logLevel);
  exitOnFatalErrors(logger);
  // Signals are handled from the very start: the daemon logs "listening" before
  // Daemon.start returns, and a supervisor may send SIGTERM right after it; with
  // no handler yet, Node's default would kill us without removing the socket.
  let daemon: Daemon | undefined;
  let stopSignal: string | undefined;
  const stop = (signal: string): void => {
    if (stopSignal) return;
    stopSignal = signal;
    logger.info(`received ${signal}`);
    // During start-up the stop happens as soon as the daemon is up (see below).
    if (daemon) exitAfterStopping(daemon);
  };
  const notify = (state: string): void => {
    void sdNotify(state).then((e) => e && logger.warn("telling systemd failed", { state, error: e.message }));
  };
  const exitAfterStopping = (running: Daemon): void => {
    notify("STOPPING=1");
    running.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error("error while stopping", { error: String(e) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    if (!daemon) return;
    const reloading = daemon;
    reloading.sandbox.reloadKeys().then(
      () => logger.info("trusted keys reloaded", { keyIds: reloading.sandbox.trustedKeyIds() }),
      (e: unknown) => logger.error("reloading trusted keys failed", { error: String(e) }),
    );
  });
  debugSignals.report((signal) => {
    const memory = process.memoryUsage();
    logger.info(`received ${signal}: status (this daemon opens no debugger)`, {
      pid: process.pid,
      uptimeS: Math.round(process.uptime()),
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
    });
  });
  try {
    daemon = await Daemon.start(flags.config, logger);
  } catch (e: unknown) {
    logger.error(`sandboxd failed to start: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
  if (stopSignal) exitAfterStopping(daemon);
  // Type=notify: dependent units start only now, when the socket accepts calls.
  else notify(`READY=1\nSTATUS=listening on ${daemon.address}`);
}

await main();
