import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import {
  clusterKeys,
  loadClusterKeys,
  openRecord,
  sealRecord,
  sha256Of,
  type ClusterKeys,
  type RemoteRecord,
} from "../../src/cache/remote-record.js";
import { parseRemoteCacheAddress } from "../../src/cache/remote-cache.js";
import { parseFlags } from "../../src/cli/daemon-flags.js";

const ID_X = "a".repeat(64);
const ID_Y = "b".repeat(64);

function keys(...secrets: Buffer[]): ClusterKeys {
  const k = clusterKeys(secrets);
  if (k instanceof Error) throw k;
  return k;
}

function record(moduleId: string, wasm = Buffer.from("module bytes")): RemoteRecord {
  return {
    moduleId,
    ok: true,
    wasmSha256: sha256Of(wasm),
    wasmBytes: wasm.byteLength,
    toolchain: "f".repeat(64),
    meta: Buffer.from("{}").toString("base64"),
    createdUnixMs: 1,
  };
}

describe("shared cache records: authenticated per module id", function () {
  const k1 = keys(randomBytes(32));

  it("a sealed record opens under its own id with the same key", function () {
    expect(openRecord(k1, ID_X, sealRecord(k1, record(ID_X)))).to.deep.equal(record(ID_X));
  });

  it("a record replayed under another id does not verify", function () {
    const opened = openRecord(k1, ID_Y, sealRecord(k1, record(ID_X)));
    expect(opened).to.be.instanceOf(Error);
    expect((opened as Error).message).to.match(/MAC does not verify/);
  });

  it("a record whose body was altered (another module hash) does not verify", function () {
    const sealed = sealRecord(k1, record(ID_X)).toString("latin1");
    const altered = Buffer.from(sealed.replace(sha256Of(Buffer.from("module bytes")), sha256Of(Buffer.from("evil"))), "latin1");
    expect(openRecord(k1, ID_X, altered)).to.be.instanceOf(Error);
  });

  it("a record signed with a key the host does not hold is refused, naming the key id", function () {
    const outsider = keys(randomBytes(32));
    const opened = openRecord(k1, ID_X, sealRecord(outsider, record(ID_X)));
    expect((opened as Error).message).to.contain(outsider.signing.id);
  });

  it("a record naming our key id with a made-up MAC is refused", function () {
    const sealed = sealRecord(k1, record(ID_X)).toString("latin1").split(" ");
    sealed[2] = "0".repeat(64);
    expect(openRecord(k1, ID_X, Buffer.from(sealed.join(" "), "latin1"))).to.be.instanceOf(Error);
  });

  it("rotation: a host holding old and new keys verifies both, and signs with the first", function () {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const rotating = keys(newKey, oldKey);
    expect(openRecord(rotating, ID_X, sealRecord(keys(oldKey), record(ID_X)))).to.not.be.instanceOf(Error);
    expect(openRecord(keys(newKey), ID_X, sealRecord(rotating, record(ID_X)))).to.not.be.instanceOf(Error);
  });

  it("garbage, other formats and malformed fields are refused, never thrown", function () {
    for (const junk of [
      Buffer.alloc(0),
      Buffer.from("hello"),
      randomBytes(300),
      Buffer.from(`sandboxd-rc9 ${k1.signing.id} ${"0".repeat(64)} {}`),
    ]) {
      expect(openRecord(k1, ID_X, junk)).to.be.instanceOf(Error);
    }
    const bad = { ...record(ID_X), wasmBytes: -1 };
    expect((openRecord(k1, ID_X, sealRecord(k1, bad)) as Error).message).to.match(/malformed/);
  });

  it("key files: one key per line, comments skipped; a short key, an empty or a missing file is an error", async function () {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-keys-"));
    try {
      const good = path.join(dir, "good");
      await writeFile(good, `# new\n${"n".repeat(64)}\n\n# old\n${"o".repeat(64)}\n`);
      const loaded = await loadClusterKeys(good);
      if (loaded instanceof Error) throw loaded;
      expect(loaded.all).to.have.length(2);
      expect(loaded.signing.secret.toString()).to.equal("n".repeat(64));
      await writeFile(path.join(dir, "short"), "hunter2\n");
      expect(String(await loadClusterKeys(path.join(dir, "short")))).to.match(/at least 32/);
      await writeFile(path.join(dir, "empty"), "# nothing\n");
      expect(String(await loadClusterKeys(path.join(dir, "empty")))).to.match(/no key/);
      expect(String(await loadClusterKeys(path.join(dir, "missing")))).to.match(/cannot read/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("--remote-cache flags", function () {
  it("accepts redis://, rediss:// with credentials and unix:// addresses", function () {
    expect(parseRemoteCacheAddress("redis://127.0.0.1:6379")).to.deep.equal({ kind: "url", url: "redis://127.0.0.1:6379" });
    expect(parseRemoteCacheAddress("rediss://sandboxd:secret@cache.internal:6380/0")).to.include({ kind: "url" });
    expect(parseRemoteCacheAddress("unix:///run/redis/redis.sock")).to.deep.equal({ kind: "unix", path: "/run/redis/redis.sock" });
    for (const bad of ["http://127.0.0.1:6379", "127.0.0.1:6379", "unix://relative.sock", "redis://"]) {
      expect(parseRemoteCacheAddress(bad), bad).to.be.instanceOf(Error);
    }
  });

  it("parses into the config, rw by default", function () {
    const flags = parseFlags(["--remote-cache", "redis://127.0.0.1:6379", "--remote-cache-key", "/etc/sandboxd/cluster.key"]);
    if (flags instanceof Error || "help" in flags) throw new Error(String(flags));
    expect(flags.config.remoteCache).to.deep.equal({
      address: { kind: "url", url: "redis://127.0.0.1:6379" },
      keyFile: "/etc/sandboxd/cluster.key",
      mode: "rw",
    });
    const ro = parseFlags([
      "--remote-cache",
      "unix:///r.sock",
      "--remote-cache-key",
      "/k",
      "--remote-cache-mode",
      "ro",
      "--remote-cache-timeout-ms",
      "500",
    ]);
    if (ro instanceof Error || "help" in ro) throw new Error(String(ro));
    expect(ro.config.remoteCache).to.include({ mode: "ro", opTimeoutMs: 500 });
  });

  it("refuses a shared cache without a key, a bad mode, and the other flags without --remote-cache", function () {
    expect(String(parseFlags(["--remote-cache", "redis://127.0.0.1:6379"]))).to.match(/needs --remote-cache-key/);
    expect(
      String(parseFlags(["--remote-cache", "redis://127.0.0.1:6379", "--remote-cache-key", "/k", "--remote-cache-mode", "wo"])),
    ).to.match(/ro or rw/);
    expect(String(parseFlags(["--remote-cache-key", "/k"]))).to.match(/need --remote-cache/);
    expect(String(parseFlags(["--remote-cache", "ftp://x", "--remote-cache-key", "/k"]))).to.match(/redis:\/\/HOST:PORT/);
  });
});
