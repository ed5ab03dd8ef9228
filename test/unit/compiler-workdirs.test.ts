import { mkdtemp, rm, stat, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { ModuleStore } from "../../src/cache/module-store.js";
import { Compiler } from "../../src/compiler/compiler.js";
import { silentLogger } from "../../src/logger.js";

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

describe("Compiler start-up", function () {
  it("removes compile dirs a killed daemon left in the temp dir, but not young ones", async function () {
    const old = await mkdtemp(path.join(tmpdir(), "sandboxd-compile-"));
    const young = await mkdtemp(path.join(tmpdir(), "sandboxd-compile-"));
    const cache = await mkdtemp(path.join(tmpdir(), "compiler-start-"));
    try {
      const twoHoursAgo = Date.now() / 1000 - 2 * 3600;
      await utimes(old, twoHoursAgo, twoHoursAgo);
      await Compiler.create(undefined, await ModuleStore.open(cache), silentLogger());
      expect(await exists(old)).to.equal(false);
      expect(await exists(young)).to.equal(true);
    } finally {
      for (const d of [old, young, cache]) await rm(d, { recursive: true, force: true });
    }
  });
});
