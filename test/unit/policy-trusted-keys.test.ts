import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { closeSync, constants, openSync } from "node:fs";
import { mkdir, open, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { MAX_TRUSTED_KEY_FILE_BYTES } from "../../src/limits.js";
import { TrustedKeys } from "../../src/policy/trusted-keys.js";
import { makeKey, tempDir, writePublicKeys } from "./policy-fixtures.js";

/**
 * Occupies every libuv threadpool thread of this process with an open() of a
 * FIFO that has no writer yet, so this process's file system calls wait behind
 * them (a real stalled file system, not a mock). Returns the release.
 */
function stallFileSystem(scratch: string): () => Promise<void> {
  const threads = Number(process.env["UV_THREADPOOL_SIZE"] ?? 4);
  const fifos = Array.from({ length: threads }, (_, i) => join(scratch, `stall-${i}`));
  for (const fifo of fifos) execFileSync("mkfifo", [fifo]);
  const stalled = fifos.map((fifo) => open(fifo, "r"));
  return async () => {
    // A writer arriving completes each stalled open().
    const writers = fifos.map((fifo) => openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    for (const handle of await Promise.all(stalled)) await handle.close();
    for (const fd of writers) closeSync(fd);
  };
}

describe("policy trusted keys", () => {
  let tmp: { path: string; remove: () => Promise<void> };
  let dir: string;

  beforeEach(async () => {
    tmp = await tempDir("policy-keys");
    dir = join(tmp.path, "keys");
    await mkdir(dir);
  });

  afterEach(async () => {
    await tmp.remove();
  });

  it("loads every <key_id>.pub and ignores other files", async () => {
    const [a, b] = [makeKey("alpha"), makeKey("beta.2025")];
    await writePublicKeys(dir, [a, b]);
    await writeFile(join(dir, "README"), "not a key");
    const keys = await TrustedKeys.load(dir);
    expect(keys.size).to.equal(2);
    expect(keys.ids()).to.deep.equal(["alpha", "beta.2025"]);
    expect(keys.get("alpha")?.export({ type: "spki", format: "pem" })).to.equal(a.publicPem);
    expect(keys.get("gamma")).to.equal(undefined);
  });

  it("skips and reports a malformed key file while the others load", async () => {
    await writePublicKeys(dir, [makeKey("good")]);
    await writeFile(join(dir, "garbage.pub"), "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n");
    await writeFile(join(dir, "empty.pub"), "");
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    expect(keys.ids()).to.deep.equal(["good"]);
    expect(problems).to.have.length(2);
    expect(problems.join("\n")).to.contain("garbage.pub").and.to.contain("empty.pub");
  });

  it("refuses a non-Ed25519 key and a private key in the trust directory", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
    await writeFile(join(dir, "rsa.pub"), rsa.publicKey.export({ type: "spki", format: "pem" }));
    const ed = generateKeyPairSync("ed25519");
    await writeFile(join(dir, "leaked.pub"), ed.privateKey.export({ type: "pkcs8", format: "pem" }));
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    expect(keys.size).to.equal(0);
    expect(problems.find((p) => p.includes("rsa.pub"))).to.contain("expected ed25519");
    expect(problems.find((p) => p.includes("leaked.pub"))).to.contain("not a PEM SPKI public key");
  });

  it("reports a directory named like a key instead of failing", async () => {
    await writePublicKeys(dir, [makeKey("good")]);
    await mkdir(join(dir, "weird.pub"));
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    expect(keys.ids()).to.deep.equal(["good"]);
    expect(problems).to.have.length(1);
  });

  it("trusts nothing without a directory", async () => {
    const keys = await TrustedKeys.load(undefined);
    expect(keys.size).to.equal(0);
    await keys.reload();
    expect(keys.size).to.equal(0);
  });

  it("rejects at load when the directory does not exist", async () => {
    let failed = false;
    await TrustedKeys.load(join(tmp.path, "missing")).catch(() => (failed = true));
    expect(failed).to.equal(true);
  });

  it("reload picks up a new key and drops a removed one", async () => {
    const [old, fresh] = [makeKey("old"), makeKey("new")];
    await writePublicKeys(dir, [old]);
    const keys = await TrustedKeys.load(dir);
    expect(keys.ids()).to.deep.equal(["old"]);
    await writePublicKeys(dir, [fresh]);
    await unlink(join(dir, "old.pub"));
    await keys.reload();
    expect(keys.ids()).to.deep.equal(["new"]);
    expect(keys.get("old")).to.equal(undefined);
  });

  it("reload keeps the good keys when a file turns bad", async () => {
    const [a, b] = [makeKey("a"), makeKey("b")];
    await writePublicKeys(dir, [a, b]);
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    await writeFile(join(dir, "b.pub"), "corrupted");
    await keys.reload();
    expect(keys.ids()).to.deep.equal(["a"]);
    expect(problems).to.have.length(1);
  });

  it("reload trusts nothing once the directory is removed", async () => {
    await writePublicKeys(dir, [makeKey("a")]);
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    await rm(dir, { recursive: true });
    await keys.reload();
    expect(keys.size).to.equal(0);
    expect(problems).to.have.length(1);
  });

  it("reload keeps the previous set when the directory cannot be read", async () => {
    await writePublicKeys(dir, [makeKey("a")]);
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    // A file where the directory was: readdir fails with ENOTDIR (chmod 000 would not stop root).
    await rm(dir, { recursive: true });
    await writeFile(dir, "");
    await keys.reload();
    expect(keys.ids()).to.deep.equal(["a"]);
    expect(problems).to.have.length(1);
    expect(problems[0]).to.contain("keeping");
  });

  it("skips a FIFO, a symlink and an oversize file without blocking, saying why", async () => {
    await writePublicKeys(dir, [makeKey("good")]);
    execFileSync("mkfifo", [join(dir, "fifo.pub")]);
    const elsewhere = makeKey("elsewhere");
    await writePublicKeys(tmp.path, [elsewhere]);
    await symlink(join(tmp.path, "elsewhere.pub"), join(dir, "elsewhere.pub"));
    await writeFile(join(dir, "huge.pub"), "#".repeat(MAX_TRUSTED_KEY_FILE_BYTES) + "\n" + makeKey("huge").publicPem);
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m));
    expect(keys.ids()).to.deep.equal(["good"]);
    expect(problems.find((p) => p.includes("fifo.pub"))).to.contain("it is a FIFO, not a regular file");
    expect(problems.find((p) => p.includes("elsewhere.pub"))).to.contain("it is a symbolic link");
    expect(problems.find((p) => p.includes("huge.pub"))).to.contain(`more than the ${MAX_TRUSTED_KEY_FILE_BYTES} a key file may have`);
  });

  it("accepts a key file of exactly the size cap", async () => {
    const key = makeKey("padded");
    await writeFile(join(dir, "padded.pub"), "#".repeat(MAX_TRUSTED_KEY_FILE_BYTES - key.publicPem.length - 1) + "\n" + key.publicPem);
    const keys = await TrustedKeys.load(dir);
    expect(keys.ids()).to.deep.equal(["padded"]);
  });

  it("a reload that outlasts its time budget keeps the previous keys, and the next reload still runs", async () => {
    const RELOAD_BUDGET_MS = 300;
    await writePublicKeys(dir, [makeKey("old")]);
    const problems: string[] = [];
    const keys = await TrustedKeys.load(dir, (m) => problems.push(m), RELOAD_BUDGET_MS);
    await unlink(join(dir, "old.pub"));
    await writePublicKeys(dir, [makeKey("new")]);
    const release = stallFileSystem(tmp.path);
    try {
      const started = Date.now();
      await keys.reload();
      expect(Date.now() - started).to.be.within(RELOAD_BUDGET_MS - 10, RELOAD_BUDGET_MS + 1_000);
      expect(keys.ids()).to.deep.equal(["old"]);
      expect(problems.join("\n"))
        .to.contain(`took longer than ${RELOAD_BUDGET_MS} ms`)
        .and.to.contain("keeping the 1 key(s) loaded before");
    } finally {
      await release();
    }
    await keys.reload();
    expect(keys.ids()).to.deep.equal(["new"]);
  });

  it("load rejects when reading the directory outlasts its time budget", async () => {
    await writePublicKeys(dir, [makeKey("a")]);
    const release = stallFileSystem(tmp.path);
    let failure: unknown;
    try {
      await TrustedKeys.load(dir, () => {}, 100).catch((e: unknown) => (failure = e));
    } finally {
      await release();
    }
    expect(String(failure)).to.contain("took longer than 100 ms");
  });
});
