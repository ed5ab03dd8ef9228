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
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(flags.config, logger);
  } catch (e: unknown) {
    logger.error(`sandboxd failed to start: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`received ${signal}`);
    daemon.stop().then(
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
    daemon.sandbox.reloadKeys().then(
      () => logger.info("trusted keys reloaded"),
      (e: unknown) => logger.error("reloading trusted keys failed", { error: String(e) }),
    );
  });
}

await main();
