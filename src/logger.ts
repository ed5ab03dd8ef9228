/**
 * The daemon's structured logger: one JSON object per line on stderr
 * (`level`, `message`, the call's fields, `timestamp`), so stdout stays free
 * for tools. Written here rather than taken from a logging library: the daemon
 * needs four levels and one sink, and the library took longer to import than
 * the rest of start-up's own code.
 */

/** Fields logged beside a message. */
export type LogFields = Readonly<Record<string, unknown>>;

/** What the daemon logs through. */
export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** Lets a hot path skip building fields nobody will see. */
  isInfoEnabled(): boolean;
}

/** Levels by severity, most severe first; a logger at a level writes that level and the ones before it. */
const LEVELS = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 } as const;
type Level = keyof typeof LEVELS;

function isLevel(level: string): level is Level {
  return Object.prototype.hasOwnProperty.call(LEVELS, level);
}

function line(level: Level, message: string, fields: LogFields | undefined): string {
  const record = { ...fields, level, message, timestamp: new Date().toISOString() };
  try {
    return JSON.stringify(record) + "\n";
  } catch (e: unknown) {
    // A field that does not serialize (a cycle, a BigInt) must not lose the message.
    return JSON.stringify({ level, message, timestamp: record.timestamp, logError: e instanceof Error ? e.message : String(e) }) + "\n";
  }
}

/** Creates the daemon logger at the given level ("info" by default). */
export function createLogger(level = "info", write: (text: string) => void = (text) => void process.stderr.write(text)): Logger {
  const max = isLevel(level) ? LEVELS[level] : LEVELS.info;
  const at = (l: Level) =>
    LEVELS[l] <= max ? (message: string, fields?: LogFields): void => write(line(l, message, fields)) : (): void => undefined;
  return { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug"), isInfoEnabled: () => LEVELS.info <= max };
}

/** A logger that drops everything, for embedding the core in tests and tools. */
export function silentLogger(): Logger {
  const drop = (): void => undefined;
  return { error: drop, warn: drop, info: drop, debug: drop, isInfoEnabled: () => false };
}
