import { execFile, spawnSync } from "node:child_process";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Policy } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { defaultConfig } from "../../src/daemon.js";
import { MAX_POLICY_BYTES, MAX_POLICY_MOUNTS } from "../../src/limits.js";
import { authorize } from "../../src/policy/authorize.js";
import { parseSignedPolicyFile } from "../../src/policy/signed-policy-file.js";
import { TrustedKeys } from "../../src/policy/trusted-keys.js";
import { tempDir } from "./policy-fixtures.js";

/** The compiled CLI, next to this compiled test under dist/. */
const SANDBOXCTL = fileURLToPath(new URL("../../src/cli/sandboxctl.js", import.meta.url));
/** The Python signing example from docs/policy.md, in the source tree. */
const PYTHON_EXAMPLE = fileURLToPath(new URL("../../../examples/policies/sign_policy.py", import.meta.url));
/** The policy documentation, which embeds the Python example. */
const POLICY_DOC = fileURLToPath(new URL("../../../docs/policy.md", import.meta.url));

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

function sandboxctl(...args: string[]): Promise<RunResult> {
  return run(process.execPath, [SANDBOXCTL, ...args]);
}

describe("policy sandboxctl (compiled CLI)", () => {
  let tmp: { path: string; remove: () => Promise<void> };
  let keys: string;
  const nowUnix = (): number => Math.floor(Date.now() / 1000);

  before(async () => {
    tmp = await tempDir("sandboxctl");
    keys = join(tmp.path, "keys");
    const r = await sandboxctl("keygen", "--id", "authority-1", "--out", keys);
    expect(r.code, r.stderr).to.equal(0);
  });

  after(async () => {
    await tmp.remove();
  });

  async function writePolicy(name: string, policy: unknown): Promise<string> {
    const file = join(tmp.path, name);
    await writeFile(file, JSON.stringify(policy));
    return file;
  }

  it("keygen writes a 0600 PKCS#8 private key and an SPKI public key the daemon loads", async () => {
    const keyStat = await stat(join(keys, "authority-1.key"));
    expect(keyStat.mode & 0o777).to.equal(0o600);
    expect(await readFile(join(keys, "authority-1.key"), "utf8")).to.contain("BEGIN PRIVATE KEY");
    expect(await readFile(join(keys, "authority-1.pub"), "utf8")).to.contain("BEGIN PUBLIC KEY");
    const problems: string[] = [];
    const trusted = await TrustedKeys.load(keys, (m) => problems.push(m));
    expect(trusted.ids()).to.deep.equal(["authority-1"]);
    expect(problems).to.deep.equal([]);
  });

  it("keygen never overwrites an existing key", async () => {
    const before = await readFile(join(keys, "authority-1.key"), "utf8");
    const r = await sandboxctl("keygen", "--id", "authority-1", "--out", keys);
    expect(r.code).to.equal(1);
    expect(await readFile(join(keys, "authority-1.key"), "utf8")).to.equal(before);
  });

  it("keygen rejects a key id that is not a safe file name (usage error)", async () => {
    const r = await sandboxctl("keygen", "--id", "../evil", "--out", keys);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain("key id");
  });

  it("sign then verify round-trips, and the daemon's authorize accepts the file", async () => {
    const input = {
      policy_id: "round-trip",
      notBeforeUnix: nowUnix() - 60,
      expires_at_unix: String(nowUnix() + 3600),
      mounts: [{ host_path: tmp.path, guestPath: "/work", writable: true }],
      timeout_ms: 1500,
    };
    const out = join(tmp.path, "signed.json");
    const signedRun = await sandboxctl(
      "policy",
      "sign",
      "--key",
      join(keys, "authority-1.key"),
      "--id",
      "authority-1",
      "--out",
      out,
      await writePolicy("rt.json", input),
    );
    expect(signedRun.code, signedRun.stderr).to.equal(0);
    const file = JSON.parse(await readFile(out, "utf8")) as Record<string, unknown>;
    expect(Object.keys(file).sort()).to.deep.equal(["keyId", "policy", "signature"]);

    const verified = await sandboxctl("policy", "verify", "--keys", keys, out);
    expect(verified.code, verified.stderr).to.equal(0);
    expect(JSON.parse(verified.stdout)).to.deep.equal({
      policyId: "round-trip",
      notBeforeUnix: input.notBeforeUnix,
      expiresAtUnix: Number(input.expires_at_unix),
      mounts: [{ hostPath: tmp.path, guestPath: "/work", writable: true }],
      timeoutMs: 1500,
    });

    const parsed = parseSignedPolicyFile(await readFile(out, "utf8"));
    if (!parsed.ok) expect.fail(parsed.error);
    const grant = await authorize(parsed.value, {
      keys: await TrustedKeys.load(keys),
      allowUnsigned: false,
      ceilings: {
        ...defaultConfig().ceilings,
        maxMemoryBytes: 1 << 30,
        maxTimeoutMs: 60_000,
        maxOutputBytes: 1 << 20,
        maxWriteBytes: 1 << 20,
        allowedRoots: [tmp.path],
      },
      defaults: {
        ...defaultConfig().defaults,
        memoryLimitBytes: 1 << 26,
        timeoutMs: 1000,
        maxOutputBytes: 1 << 16,
        maxWriteBytes: 1 << 16,
      },
      nowMs: Date.now(),
    });
    expect(grant).to.include({ policyId: "round-trip", timeoutMs: 1500 });
    expect(grant.mounts).to.have.length(1);
  });

  it("sign --expires-in sets the expiry from now", async () => {
    const r = await sandboxctl(
      "policy",
      "sign",
      "--key",
      join(keys, "authority-1.key"),
      "--id",
      "authority-1",
      "--expires-in",
      "600",
      await writePolicy("ei.json", { policyId: "ei" }),
    );
    expect(r.code, r.stderr).to.equal(0);
    const parsed = parseSignedPolicyFile(r.stdout);
    if (!parsed.ok) expect.fail(parsed.error);
    const expires = Policy.decode(parsed.value.policy).expiresAtUnix;
    expect(expires).to.be.within(nowUnix() + 590, nowUnix() + 610);
  });

  it("sign refuses a policy without an expiry, with an unknown field, or with a bad guest path", async () => {
    const key = ["--key", join(keys, "authority-1.key"), "--id", "authority-1"];
    const noExpiry = await sandboxctl("policy", "sign", ...key, await writePolicy("ne.json", { policyId: "ne" }));
    expect(noExpiry.code).to.equal(1);
    expect(noExpiry.stderr).to.contain("POLICY_EXPIRED");
    const typo = await sandboxctl("policy", "sign", ...key, await writePolicy("typo.json", { policyId: "t", expires_at: nowUnix() + 60 }));
    expect(typo.code).to.equal(1);
    expect(typo.stderr).to.contain("expires_at");
    const badMount = { policyId: "m", expiresAtUnix: nowUnix() + 60, mounts: [{ hostPath: "/tmp", guestPath: "rel" }] };
    const guest = await sandboxctl("policy", "sign", ...key, await writePolicy("gm.json", badMount));
    expect(guest.code).to.equal(1);
    expect(guest.stderr).to.contain("POLICY_MOUNT_DENIED");
    expect(noExpiry.stdout + typo.stdout + guest.stdout).to.equal("");
  });

  it("sign refuses network without allowed_hosts, allowed_hosts without network, and a malformed host", async () => {
    const key = ["--key", join(keys, "authority-1.key"), "--id", "authority-1"];
    const cases = [
      { policyId: "n1", expiresAtUnix: nowUnix() + 60, network: true },
      { policyId: "n2", expiresAtUnix: nowUnix() + 60, allowedHosts: ["https://api.example.com"] },
      { policyId: "n3", expiresAtUnix: nowUnix() + 60, network: true, allowedHosts: ["api.example.com"] },
    ];
    for (const [i, policy] of cases.entries()) {
      const r = await sandboxctl("policy", "sign", ...key, await writePolicy(`net${i}.json`, policy));
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.contain("POLICY_MALFORMED");
      expect(r.stdout).to.equal("");
    }
  });

  it("sign refuses a policy over the daemon's size limits: too many mounts, or too many bytes", async () => {
    const key = ["--key", join(keys, "authority-1.key"), "--id", "authority-1"];
    const mounts = (n: number, length: number) =>
      Array.from({ length: n }, (_, i) => ({ hostPath: `/srv/${"d".repeat(length)}`, guestPath: `/m${i}` }));
    const many = await sandboxctl(
      "policy",
      "sign",
      ...key,
      await writePolicy("many.json", { policyId: "many", expiresAtUnix: nowUnix() + 60, mounts: mounts(MAX_POLICY_MOUNTS + 1, 1) }),
    );
    expect(many.code).to.equal(1);
    expect(many.stderr).to.contain("POLICY_TOO_LARGE");
    const long = await sandboxctl(
      "policy",
      "sign",
      ...key,
      await writePolicy("long.json", {
        policyId: "long",
        expiresAtUnix: nowUnix() + 60,
        mounts: mounts(MAX_POLICY_MOUNTS, MAX_POLICY_BYTES / MAX_POLICY_MOUNTS),
      }),
    );
    expect(long.code).to.equal(1);
    expect(long.stderr).to.contain("POLICY_TOO_LARGE");
    expect(many.stdout + long.stdout).to.equal("");
  });

  describe("verify exits non-zero with the reason", () => {
    let good: string;
    before(async () => {
      const r = await sandboxctl(
        "policy",
        "sign",
        "--key",
        join(keys, "authority-1.key"),
        "--id",
        "authority-1",
        await writePolicy("v.json", { policyId: "v", expiresAtUnix: nowUnix() + 3600 }),
      );
      expect(r.code, r.stderr).to.equal(0);
      good = r.stdout;
    });

    async function verifyText(text: string, ...extra: string[]): Promise<RunResult> {
      const file = join(tmp.path, "to-verify.json");
      await writeFile(file, text);
      return sandboxctl("policy", "verify", "--keys", keys, ...extra, file);
    }

    it("for a tampered policy", async () => {
      const file = JSON.parse(good) as { policy: string };
      const bytes = Buffer.from(file.policy, "base64");
      bytes[2] = (bytes[2] ?? 0) ^ 1;
      const r = await verifyText(JSON.stringify({ ...file, policy: bytes.toString("base64") }));
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain("POLICY_BAD_SIGNATURE");
      expect(r.stdout).to.equal("");
    });

    it("for an unknown key", async () => {
      const r = await verifyText(JSON.stringify({ ...(JSON.parse(good) as object), keyId: "someone-else" }));
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain("POLICY_UNKNOWN_KEY");
    });

    it("for an expired policy (--now after the expiry)", async () => {
      const r = await verifyText(good, "--now", String(nowUnix() + 7200));
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain("POLICY_EXPIRED");
    });

    it("for a file that is not a signed policy", async () => {
      const r = await verifyText('{"policy": 5}');
      expect(r.code).to.equal(1);
    });
  });

  it("example policies expired (a fixed expires_at_unix): none is written into an example or the docs, and each signs at use with --expires-in", async () => {
    const examples = fileURLToPath(new URL("../../../examples/policies/", import.meta.url));
    const docs = await Promise.all(
      ["docs/policy.md", "docs/network.md", "README.md"].map((f) =>
        readFile(fileURLToPath(new URL(`../../../${f}`, import.meta.url)), "utf8"),
      ),
    );
    const jsonBlocks = docs.flatMap((d) => [...d.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!));
    const files = (await readdir(examples)).filter((f) => f.endsWith(".json"));
    expect(files).to.not.be.empty;
    for (const text of [...jsonBlocks, ...(await Promise.all(files.map((f) => readFile(join(examples, f), "utf8"))))]) {
      expect(text, "a fixed expiry in an example").to.not.match(
        /"(expires_at_unix|expiresAtUnix|not_before_unix|notBeforeUnix)"\s*:\s*"?\d/,
      );
    }
    for (const file of files) {
      const signed = join(tmp.path, `example-${file}`);
      const r = await sandboxctl(
        "policy",
        "sign",
        "--key",
        join(keys, "authority-1.key"),
        "--expires-in",
        "15m",
        "--out",
        signed,
        join(examples, file),
      );
      expect(r.code, `${file}: ${r.stderr}`).to.equal(0);
      expect((await sandboxctl("policy", "verify", "--keys", keys, signed)).code, file).to.equal(0);
    }
    const unsigned = await sandboxctl("policy", "sign", "--key", join(keys, "authority-1.key"), join(examples, files[0]!));
    expect(unsigned.code).to.equal(1);
    expect(unsigned.stderr).to.contain("POLICY_EXPIRED").and.to.contain("--expires-in");
  });

  it("docs/policy.md embeds the Python example verbatim", async () => {
    const doc = await readFile(POLICY_DOC, "utf8");
    expect(doc).to.contain("```python\n" + (await readFile(PYTHON_EXAMPLE, "utf8")) + "```");
  });

  it("the Python example in docs/policy.md signs byte-identical policies that verify", async function () {
    // scripts/setup installs Debian's python3-cryptography for /usr/bin/python3; a PATH python3 may have its own.
    const python = ["python3", "/usr/bin/python3"].find(
      (candidate) => spawnSync(candidate, ["-c", "import cryptography"], { encoding: "utf8" }).status === 0,
    );
    // In CI the set-up machine must have it: skipping there would hide a broken example.
    if (!python) {
      if (process.env["CI"]) throw new Error("no python3 with the cryptography package; scripts/setup installs python3-cryptography");
      this.skip();
    }
    const input = await writePolicy("py.json", {
      policy_id: "from-python",
      not_before_unix: nowUnix() - 10,
      expiresAtUnix: nowUnix() + 600,
      mounts: [
        { host_path: "/srv/in", guest_path: "/in" },
        { hostPath: "/srv/out", guestPath: "/out", writable: true },
      ],
      memory_limit_bytes: 3 * 2 ** 32,
      timeout_ms: 2500,
      max_output_bytes: 4096,
      network: true,
      allowed_hosts: ["https://api.example.com", "http://*.example.org:8080"],
      max_write_bytes: 5000,
      max_http_requests: 7,
      maxHttpResponseBytes: 2 ** 33,
      http_timeout_ms: 1234,
      fuel_limit: 2 ** 40,
    });
    const py = await run(python, [PYTHON_EXAMPLE, join(keys, "authority-1.key"), "authority-1", input]);
    expect(py.code, py.stderr).to.equal(0);
    const ts = await sandboxctl("policy", "sign", "--key", join(keys, "authority-1.key"), "--id", "authority-1", input);
    expect(ts.code, ts.stderr).to.equal(0);
    expect((JSON.parse(py.stdout) as { policy: string }).policy).to.equal((JSON.parse(ts.stdout) as { policy: string }).policy);
    const pyFile = join(tmp.path, "py-signed.json");
    await writeFile(pyFile, py.stdout);
    const verified = await sandboxctl("policy", "verify", "--keys", keys, pyFile);
    expect(verified.code, verified.stderr).to.equal(0);
    expect(JSON.parse(verified.stdout)).to.include({
      policyId: "from-python",
      network: true,
      memoryLimitBytes: 3 * 2 ** 32,
      maxHttpRequests: 7,
      httpTimeoutMs: 1234,
      fuelLimit: 2 ** 40,
    });
    expect(JSON.parse(verified.stdout).allowedHosts).to.deep.equal(["https://api.example.com", "http://*.example.org:8080"]);
  });
});
