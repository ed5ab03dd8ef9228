import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { ModuleStore } from "../../src/cache/module-store.js";
import { Compiler } from "../../src/compiler/compiler.js";
import { loadSdk } from "../../src/compiler/sdk.js";
import type { Toolchain } from "../../src/compiler/toolchain.js";
import { silentLogger } from "../../src/logger.js";

// Needs the SDK built by scripts/build-sdk (scripts/setup runs it).
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SDK_DIR = path.join(ROOT, "build/sdk");

/** Absolute paths to the SDK's own sources recorded in a file, except the remapped, checkout-independent one. */
function checkoutPathsIn(bytes: Buffer): string[] {
  const found = new Set<string>();
  for (const m of bytes.toString("latin1").matchAll(/(\/[\w.\-/]*?)\/sdk\/rust\/src\//g)) {
    if (m[1] !== "/sandboxd") found.add(m[1]!);
  }
  return [...found];
}

describe("module ids do not depend on where the repository is checked out", function () {
  it("module ids differed between clones: the SDK's rlibs record no checkout path", async function () {
    const deps = path.join(SDK_DIR, "deps");
    for (const name of await readdir(deps)) {
      expect(checkoutPathsIn(await readFile(path.join(deps, name))), `${name} records where the SDK was built`).to.deep.equal([]);
    }
  });

  it("the same SDK content gives the same module id from any directory", async function () {
    const sdk = await loadSdk(SDK_DIR);
    if (!sdk) throw new Error(`no SDK in ${SDK_DIR}: run scripts/build-sdk`);
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-ids-"));
    try {
      const store = await ModuleStore.open(dir);
      const toolchain: Toolchain = { rustc: "/usr/bin/rustc", version: sdk.rustcVersion, target: sdk.target, sysroot: "/usr" } as Toolchain;
      const here = new Compiler(toolchain, store, silentLogger(), { bwrap: undefined, sdk });
      const elsewhere = new Compiler(toolchain, store, silentLogger(), {
        bwrap: undefined,
        sdk: {
          ...sdk,
          dir: "/srv/other-clone/build/sdk",
          rustcArgs: sdk.rustcArgs.map((a) => a.replaceAll(SDK_DIR, "/srv/other-clone/build/sdk")),
          readOnlyPaths: ["/srv/other-clone/build/sdk/deps"],
        },
      });
      const source = "fn main() {}\n";
      expect(elsewhere.moduleIdFor(source, toolchain)).to.equal(here.moduleIdFor(source, toolchain));
      expect(elsewhere.toolchainRecord(toolchain)).to.deep.equal(here.toolchainRecord(toolchain));
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
