import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, truncate, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { ModuleStore } from "../../src/cache/module-store.js";

const idOf = (s: string): string => createHash("sha256").update(s).digest("hex");

describe("ModuleStore (on-disk module cache)", function () {
  let cacheDir: string;
  let warnings: string[];
  const open = (maxBytes?: number): Promise<ModuleStore> =>
    ModuleStore.open(cacheDir, { ...(maxBytes ? { maxBytes } : {}), warn: (m) => warnings.push(m) });
  const entryFile = (id: string): string => path.join(cacheDir, "modules", `${id}.mod`);

  beforeEach(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "module-store-"));
    warnings = [];
  });

  afterEach(async function () {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("returns what was put, with its metadata, and survives a reopen (restart)", async function () {
    const store = await open();
    const id = idOf("a");
    await store.put(id, Buffer.from("module-bytes"), Buffer.from('{"w":1}'));
    expect(Buffer.from((await store.get(id))!).toString()).to.equal("module-bytes");
    const reopened = await open();
    expect(reopened.stats().entries).to.equal(1);
    const hit = await reopened.lookup(id);
    expect(Buffer.from(hit!.meta).toString()).to.equal('{"w":1}');
    expect(Buffer.from((await reopened.get(id))!).toString()).to.equal("module-bytes");
    expect(await reopened.lookup(idOf("absent"))).to.equal(undefined);
    expect(await reopened.get("not-an-id")).to.equal(undefined);
  });

  it("evicts an entry whose bytes were flipped and never returns them", async function () {
    const id = idOf("b");
    await (await open()).put(id, Buffer.alloc(4096, 7));
    const raw = await readFile(entryFile(id));
    raw[raw.byteLength - 10] ^= 0xff;
    await writeFile(entryFile(id), raw);
    const store = await open();
    expect(await store.lookup(id)).to.equal(undefined);
    expect(await store.get(id)).to.equal(undefined);
    expect(warnings.join("\n")).to.contain("corrupt");
    await stat(entryFile(id)).then(
      () => expect.fail("corrupt entry still on disk"),
      (e: NodeJS.ErrnoException) => expect(e.code).to.equal("ENOENT"),
    );
    expect(store.stats().entries).to.equal(0);
  });

  it("evicts a truncated entry (a crash mid-write that somehow got renamed)", async function () {
    const id = idOf("c");
    await (await open()).put(id, Buffer.alloc(4096, 1));
    await truncate(entryFile(id), 100);
    const store = await open();
    expect(await store.get(id)).to.equal(undefined);
    expect(await store.lookup(id)).to.equal(undefined);
  });

  it("evicts an entry with a garbage header", async function () {
    const id = idOf("d");
    await open();
    await writeFile(entryFile(id), "\0asm not ours");
    const store = await open();
    expect(await store.get(id)).to.equal(undefined);
    expect(warnings).to.have.length(1);
  });

  it("deletes temp files left by an interrupted write when it opens", async function () {
    const store = await open();
    await store.put(idOf("e"), Buffer.from("x"));
    const leftover = path.join(cacheDir, "modules", `${idOf("f")}.abcdef.tmp`);
    await writeFile(leftover, "half a module");
    await open();
    expect(await readdir(path.join(cacheDir, "modules"))).to.deep.equal([`${idOf("e")}.mod`]);
  });

  it("keeps the total under the cap by evicting the least recently used entry", async function () {
    const size = 1000;
    const store = await open(3 * size + 3 * 120);
    const [a, b, c, d] = ["a", "b", "c", "d"].map(idOf) as [string, string, string, string];
    await store.put(a, Buffer.alloc(size));
    await store.put(b, Buffer.alloc(size));
    await store.put(c, Buffer.alloc(size));
    expect(await store.lookup(a)).to.not.equal(undefined); // a is now more recent than b
    await store.put(d, Buffer.alloc(size));
    expect(await store.lookup(b)).to.equal(undefined);
    for (const id of [a, c, d]) expect(await store.lookup(id), id).to.not.equal(undefined);
    expect(store.stats().bytes).to.be.at.most(store.stats().maxBytes);
  });

  it("carries recency across a restart through file mtimes", async function () {
    const size = 1000;
    const first = await open();
    const [a, b, c] = ["a", "b", "c"].map(idOf) as [string, string, string];
    await first.put(a, Buffer.alloc(size));
    await first.put(b, Buffer.alloc(size));
    await first.put(c, Buffer.alloc(size));
    // a used most recently, b least
    const t = Date.now() / 1000;
    await utimes(entryFile(b), t - 300, t - 300);
    await utimes(entryFile(c), t - 200, t - 200);
    await utimes(entryFile(a), t - 100, t - 100);
    const small = await open(2 * size + 2 * 120);
    expect(await small.lookup(b)).to.equal(undefined);
    expect(await small.lookup(a)).to.not.equal(undefined);
    expect(await small.lookup(c)).to.not.equal(undefined);
  });
});
