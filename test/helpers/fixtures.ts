import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Source of test/fixtures/scripts/<name>.rs (read from the repo, not from dist/). */
export function script(name: string): string {
  return readFileSync(fileURLToPath(new URL(`../../../test/fixtures/scripts/${name}.rs`, import.meta.url)), "utf8");
}
