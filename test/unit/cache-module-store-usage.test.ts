import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { ModuleStore } from "../../src/cache/module-store.js";

const idOf = (s: string): string => createHash("sha256").update(s).digest("hex");

describe("ModuleStore usage: hit counts, last use, pins, removal", function () {
  let cacheDir: string;
  let warnings: string[];
  const open = (maxBytes?: number): Promise<ModuleStore> =>
    ModuleStore.open(cacheDir, { ...(maxBytes ? { maxBytes } : {}), warn: (m) => warnings.push(m) });
  const usageFile = (): string => path.join(cacheDir, "modules", "usage.json");

  beforeEach(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "module-store-usage-"));
    warnings = [];
  });

  afterEach(async function () {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("counts uses in memory only, and writes them at close for the next open", async function () {
    const store = await open();
    const id = idOf("a");
    await store.put(id, Buffer.from("m"));
    const before = Date.now();
    for (let i = 0; i < 5; i++) store.recordUse(id);
    expect(store.usage(id)).to.deep.include({ hits: 5, pinned: false });
    expect(store.usage(id)!.lastUsedMs).to.be.at.least(before);
    // The hit path does not write: nothing is on disk until the lazy write or close.
    await new Promise((r) => setTimeout(r, 200));
    await stat(usageFile()).then(
      () => expect.fail("a use was written synchronously"),
      (e: NodeJS.ErrnoException) => expect(e.code).to.equal("ENOENT"),
    );
    await store.close();
    const reopened = await open();
    expect(reopened.usage(id)).to.deep.include({ hits: 5, lastUsedMs: store.usage(id)!.lastUsedMs });
    expect(warnings).to.deep.equal([]);
  });

  it("a pin is on disk before setPinned returns (no close needed to survive a crash)", async function () {
    const store = await open();
    const id = idOf("p");
    await store.put(id, Buffer.from("m"));
    expect(await store.setPinned(id, true)).to.equal(true);
    // A second process opening the directory now sees what a restart after kill -9 would.
    expect((await open()).usage(id)?.pinned).to.equal(true);
    expect(await store.setPinned(id, false)).to.equal(true);
    expect((await open()).usage(id)?.pinned).to.equal(false);
    expect(await store.setPinned(idOf("absent"), true)).to.equal(false);
  });

  it("LRU eviction for space skips pinned entries, however old", async function () {
    const size = 1000;
    const store = await open(3 * size + 3 * 120);
    const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(idOf) as [string, string, string, string, string];
    await store.put(a, Buffer.alloc(size));
    await store.setPinned(a, true);
    await store.put(b, Buffer.alloc(size));
    await store.put(c, Buffer.alloc(size));
    await store.put(d, Buffer.alloc(size)); // a is least recently used, but pinned: b goes
    await store.put(e, Buffer.alloc(size)); // then c
    expect(store.usage(a)).to.not.equal(undefined);
    expect(store.usage(b)).to.equal(undefined);
    expect(store.usage(c)).to.equal(undefined);
    expect(store.stats().bytes).to.be.at.most(store.stats().maxBytes);
    // and still at the next open, whose own cap check reads the pin back
    const reopened = await open(3 * size + 3 * 120);
    expect(reopened.usage(a)?.pinned).to.equal(true);
  });

  it("remove and clear delete entries on disk, pinned ones too, and forget their usage", async function () {
    const store = await open();
    const [a, b, c] = ["a", "b", "c"].map(idOf) as [string, string, string];
    for (const id of [a, b, c]) await store.put(id, Buffer.from(id));
    await store.setPinned(b, true);
    store.recordUse(c);
    expect(await store.remove(a)).to.deep.include({ removed: true });
    expect(await store.remove(a)).to.deep.equal({ removed: false, bytes: 0 });
    // An entry another process put in the directory (not in our index) goes too.
    const stranger = idOf("stranger");
    await (await open()).put(stranger, Buffer.from("x"));
    expect(await store.clear()).to.deep.include({ removed: 3 });
    expect((await readdir(path.join(cacheDir, "modules"))).filter((n) => n.endsWith(".mod"))).to.deep.equal([]);
    expect(store.stats()).to.deep.include({ entries: 0, bytes: 0 });
    expect(JSON.parse(await readFile(usageFile(), "utf8"))).to.deep.equal({ version: 1, modules: {} });
  });

  it("a clear waits for puts under way: afterwards the index and the directory agree", async function () {
    const store = await open();
    // Clear at varying points of the puts' write-fsync-rename-fsync, in many rounds.
    for (let round = 0; round < 30; round++) {
      const ids = Array.from({ length: 8 }, (_, i) => idOf(`concurrent-${round}-${i}`));
      const puts = ids.map((id) => store.put(id, Buffer.alloc(16 * 1024, round)));
      await new Promise((r) => setTimeout(r, round % 6));
      await Promise.all([...puts, store.clear()]);
      const onDisk = (await readdir(path.join(cacheDir, "modules"))).filter((n) => n.endsWith(".mod")).map((n) => n.slice(0, -4));
      expect(onDisk.sort(), `round ${round}`).to.deep.equal(
        store
          .usages()
          .map((u) => u.moduleId)
          .sort(),
      );
      expect(store.stats().bytes, `round ${round}`).to.equal(store.usages().reduce((n, u) => n + u.sizeBytes, 0));
    }
  });

  it("describe reads an unverified entry's metadata from its header without loading the module", async function () {
    const store = await open();
    const id = idOf("meta");
    await store.put(id, Buffer.alloc(100_000, 3), Buffer.from('{"origin":"upload"}'));
    const fresh = await open();
    expect(Buffer.from((await fresh.describe(id))!).toString()).to.equal('{"origin":"upload"}');
    expect(await fresh.describe(idOf("absent"))).to.equal(undefined);
    await writeFile(path.join(cacheDir, "modules", `${id}.mod`), "garbage");
    expect(await fresh.describe(id)).to.equal(undefined);
  });

  it("an invalid usage file costs the counts, with a warning, never the store", async function () {
    const store = await open();
    const id = idOf("u");
    await store.put(id, Buffer.from("m"));
    await writeFile(usageFile(), "{not json");
    const reopened = await open();
    expect(reopened.usage(id)).to.deep.include({ hits: 0, pinned: false });
    expect(warnings.join("\n")).to.contain("usage file is invalid");
    expect(Buffer.from((await reopened.get(id))!).toString()).to.equal("m");
  });
});
