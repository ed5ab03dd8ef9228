#!/usr/bin/env node
/**
 * `sandboxd`: the daemon's command line. Parses flags into a DaemonConfig,
 * starts the daemon, and maps signals: SIGTERM/SIGINT stop it cleanly, SIGHUP
 * reloads the trusted keys.
 */
import { createLogger } from "../logger.js";
import { Daemon } from "../daemon.js";
import { parseFlags, USAGE } from "./daemon-flags.js";

async function main(): Promise<void> {
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
  // A bug must be logged loudly, but one failing call must not take everyone's work down with it.
  process.on("uncaughtException", (e) => logger.error("uncaught exception", { error: e.message, stack: e.stack }));
  process.on("unhandledRejection", (e) => logger.error("unhandled rejection", { error: String(e) }));
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
  const exitAfterStopping = (running: Daemon): void => {
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
    daemon.sandbox.reloadKeys().then(
      () => logger.info("trusted keys reloaded"),
      (e: unknown) => logger.error("reloading trusted keys failed", { error: String(e) }),
    );
  });
  try {
    daemon = await Daemon.start(flags.config, logger);
  } catch (e: unknown) {
    logger.error(`sandboxd failed to start: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
  if (stopSignal) exitAfterStopping(daemon);
}

await main();
