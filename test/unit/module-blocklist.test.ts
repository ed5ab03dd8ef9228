import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import { BLOCKLIST_FILE, ModuleBlocklist } from "../../src/policy/module-blocklist.js";

const A = "a".repeat(64);
const B = "b".repeat(64);

describe("ModuleBlocklist", function () {
  let cacheDir: string;

  beforeEach(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "blocklist-"));
  });

  afterEach(async function () {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("check throws MODULE_BLOCKED for a blocked id only", async function () {
    const list = await ModuleBlocklist.open(cacheDir);
    list.check(A);
    await list.block(A, "note", 1000);
    expect(() => list.check(A))
      .to.throw(SandboxError)
      .with.property("reason", "MODULE_BLOCKED");
    list.check(B);
  });

  it("a block and an unblock are on disk when they return, for the next open", async function () {
    const list = await ModuleBlocklist.open(cacheDir);
    expect(await list.block(A, "first", 1000)).to.deep.equal({ blockedUnixMs: 1000, reason: "first" });
    // Blocking again replaces the note, keeps the time.
    expect(await list.block(A, "second", 2000)).to.deep.equal({ blockedUnixMs: 1000, reason: "second" });
    await list.block(B, "", 3000);
    let reopened = await ModuleBlocklist.open(cacheDir);
    expect(reopened.ids().sort()).to.deep.equal([A, B]);
    expect(reopened.get(A)).to.deep.equal({ blockedUnixMs: 1000, reason: "second" });
    expect(await list.unblock(A)).to.equal(true);
    expect(await list.unblock(A)).to.equal(false);
    reopened = await ModuleBlocklist.open(cacheDir);
    expect(reopened.ids()).to.deep.equal([B]);
  });

  it("concurrent changes are applied one after another, none lost", async function () {
    const list = await ModuleBlocklist.open(cacheDir);
    const ids = Array.from({ length: 30 }, (_, i) => i.toString(16).padStart(64, "0"));
    await Promise.all(ids.map((id, i) => list.block(id, `n${i}`, i)));
    expect((await ModuleBlocklist.open(cacheDir)).size).to.equal(30);
    expect((await readdir(cacheDir)).filter((n) => n.endsWith(".tmp"))).to.deep.equal([]);
  });

  for (const [what, content] of [
    ["not JSON", "{"],
    ["another version", '{"version":2,"blocked":{}}'],
    ["a bad id", '{"version":1,"blocked":{"abc":{"blockedUnixMs":1,"reason":""}}}'],
    ["an entry without a time", `{"version":1,"blocked":{"${A}":{"reason":""}}}`],
  ] as const) {
    it(`refuses to open a file with ${what}, saying which file and how to recover`, async function () {
      await writeFile(path.join(cacheDir, BLOCKLIST_FILE), content);
      const error = await ModuleBlocklist.open(cacheDir).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(error?.message).to.contain(path.join(cacheDir, BLOCKLIST_FILE)).and.to.contain("remove it to lift every block");
    });
  }

  it("deletes a half-written replacement left by a crash, keeping the last whole file", async function () {
    const list = await ModuleBlocklist.open(cacheDir);
    await list.block(A, "kept", 1);
    await writeFile(path.join(cacheDir, `${BLOCKLIST_FILE}.abcdef.tmp`), '{"version":1,"bl');
    const reopened = await ModuleBlocklist.open(cacheDir);
    expect(reopened.ids()).to.deep.equal([A]);
    expect(await readdir(cacheDir)).to.deep.equal([BLOCKLIST_FILE]);
    expect(JSON.parse(await readFile(path.join(cacheDir, BLOCKLIST_FILE), "utf8"))).to.deep.equal({
      version: 1,
      blocked: { [A]: { blockedUnixMs: 1, reason: "kept" } },
    });
  });
});
