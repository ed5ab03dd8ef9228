/** sandboxd's version, as package.json states it, for `--version` and the Info RPC. */
import { readFileSync } from "node:fs";

/** The version in package.json (read once, from the installed tree beside dist/). */
export const SANDBOXD_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
