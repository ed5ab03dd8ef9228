/** The daemon's version, as its package.json states it (receipts name it). */
import { readFileSync } from "node:fs";

/** sandboxd's version, e.g. "0.1.0". */
export const DAEMON_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
