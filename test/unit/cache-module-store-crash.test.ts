import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { ModuleStore } from "../../src/cache/module-store.js";

const STORE_JS = fileURLToPath(new URL("../../src/cache/module-store.js", import.meta.url));

// A writer that stores multi-megabyte modules back to back and reports each completed put on stdout.
const WRITER = `
import { randomBytes, createHash } from "node:crypto";
const { ModuleStore } = await import(process.argv[2]);
const store = await ModuleStore.open(process.argv[3]);
for (let i = 0; ; i++) {
  const bytes = randomBytes(4 * 1024 * 1024);
  const id = createHash("sha256").update(bytes).digest("hex");
  await store.put(id, bytes);
  process.stdout.write(id + "\\n");
}
`;

describe("ModuleStore under kill -9", function () {
  let dir: string;
  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), "module-store-crash-"));
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it("a writer killed with SIGKILL mid-put leaves only whole, verifiable entries", async function () {
    this.timeout(60_000);
    const script = path.join(dir, "writer.mjs");
    await writeFile(script, WRITER);
    const cacheDir = path.join(dir, "cache");
    const completed: string[] = [];
    for (const killAfterMs of [300, 700, 1100]) {
      const child = spawn(process.execPath, [script, STORE_JS, cacheDir], { stdio: ["ignore", "pipe", "inherit"] });
      child.stdout.on("data", (d: Buffer) => completed.push(...d.toString().split("\n").filter(Boolean)));
      const exited = new Promise((resolve) => child.once("exit", resolve));
      await new Promise((r) => setTimeout(r, killAfterMs));
      child.kill("SIGKILL");
      await exited;
    }
    expect(completed.length, "the writer completed no put before being killed").to.be.greaterThan(0);
    const warnings: string[] = [];
    const store = await ModuleStore.open(cacheDir, { warn: (m) => warnings.push(m) });
    const names = await readdir(path.join(cacheDir, "modules"));
    expect(
      names.filter((n) => n.endsWith(".tmp")),
      "temp files survive open",
    ).to.deep.equal([]);
    // every entry that exists must verify, and its content must be what its id (sha256 of bytes) says
    for (const name of names) {
      const id = name.replace(/\.mod$/, "");
      const bytes = await store.get(id);
      expect(bytes, `entry ${id} did not verify`).to.not.equal(undefined);
    }
    for (const id of completed) expect(await store.get(id), `completed put ${id} lost`).to.not.equal(undefined);
    expect(warnings).to.deep.equal([]);
  });
});
