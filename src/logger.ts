import winston from "winston";

/** The daemon's structured logger: JSON lines on stderr, so stdout stays free for tools. */
export type Logger = winston.Logger;

/** Creates the daemon logger at the given level ("info" by default, "debug" with --verbose). */
export function createLogger(level = "info"): Logger {
  return winston.createLogger({
    level,
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console({ stderrLevels: ["error", "warn", "info", "http", "verbose", "debug", "silly"] })],
  });
}

/** A logger that drops everything, for embedding the core in tests and tools. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
