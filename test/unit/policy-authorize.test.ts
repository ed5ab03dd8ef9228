import { mkdir, symlink, writeFile, realpath } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { Code } from "../../src/errors/codes.js";
import { MAX_POLICY_BYTES, MAX_POLICY_MOUNTS, POLICY_CLOCK_SKEW_SECONDS } from "../../src/limits.js";
import { authorize, bindToModule, type AuthorizeContext, type Grant } from "../../src/policy/authorize.js";
import { TrustedKeys } from "../../src/policy/trusted-keys.js";
import type { Policy } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { parseHostPatterns, type HostPattern } from "../../src/policy/host-patterns.js";
import { expectRefused, makeKey, signed, tempDir, writePublicKeys, type TestKey } from "./policy-fixtures.js";

const NOW_UNIX = 1_800_000_000;
const HOUR_SECONDS = 3600;
const MIB = 1024 * 1024;
const MODULE_A = "a".repeat(64);
const MODULE_B = "b".repeat(64);

function patterns(...texts: string[]): HostPattern[] {
  const parsed = parseHostPatterns(texts);
  if (parsed instanceof Error) throw parsed;
  return parsed;
}

describe("policy authorize", () => {
  let tmp: { path: string; remove: () => Promise<void> };
  let root: string;
  let outside: string;
  let k1: TestKey;
  let k2: TestKey;
  let untrusted: TestKey;
  let keys: TrustedKeys;

  before(async () => {
    tmp = await tempDir("policy-authorize");
    const keyDir = join(tmp.path, "keys");
    root = join(tmp.path, "root");
    outside = join(tmp.path, "outside");
    for (const dir of [keyDir, root, join(root, "ro"), join(root, "rw"), outside]) await mkdir(dir);
    await writeFile(join(root, "file.txt"), "not a directory");
    await symlink(outside, join(root, "escape"));
    await symlink(join(root, "ro"), join(root, "alias"));
    k1 = makeKey("k1");
    k2 = makeKey("k2");
    untrusted = makeKey("untrusted");
    await writePublicKeys(keyDir, [k1, k2]);
    keys = await TrustedKeys.load(keyDir);
  });

  after(async () => {
    await tmp.remove();
  });

  function ctx(overrides: Partial<AuthorizeContext> = {}): AuthorizeContext {
    return {
      keys,
      allowUnsigned: false,
      ceilings: {
        maxMemoryBytes: 512 * MIB,
        maxTimeoutMs: 60_000,
        maxOutputBytes: 32 * MIB,
        maxWriteBytes: 8 * MIB,
        maxHttpRequests: 50,
        maxHttpResponseBytes: 4 * MIB,
        maxHttpTimeoutMs: 30_000,
        maxFuel: 1_000_000,
        networkHosts: patterns("https://api.example.com", "https://*.example.org", "http://127.0.0.1:8080"),
        allowedRoots: [root],
      },
      defaults: {
        memoryLimitBytes: 128 * MIB,
        timeoutMs: 5_000,
        maxOutputBytes: MIB,
        maxWriteBytes: 2 * MIB,
        maxHttpRequests: 10,
        maxHttpResponseBytes: MIB,
        httpTimeoutMs: 3_000,
        fuelLimit: 0,
      },
      nowMs: NOW_UNIX * 1000,
      ...overrides,
    };
  }

  /** A policy valid around NOW_UNIX, with `extra` on top. */
  function valid(extra: Partial<Policy> = {}): Partial<Policy> {
    return { policyId: "p1", notBeforeUnix: NOW_UNIX - HOUR_SECONDS, expiresAtUnix: NOW_UNIX + HOUR_SECONDS, ...extra };
  }

  describe("a valid policy", () => {
    it("grants its mounts (host paths resolved) and limits", async () => {
      let signedBytes: Uint8Array = new Uint8Array(0);
      const grant = await authorize(
        keep(
          (s) => (signedBytes = s.policy),
          signed(
            valid({
              moduleId: MODULE_A,
              mounts: [
                { hostPath: join(root, "ro"), guestPath: "/in", writable: false },
                { hostPath: join(root, "rw"), guestPath: "/out", writable: true },
              ],
              memoryLimitBytes: 64 * MIB,
              timeoutMs: 2_000,
              maxOutputBytes: 4096,
              network: true,
              allowedHosts: ["https://api.example.com", "https://eu.example.org"],
              maxHttpRequests: 5,
            }),
            k1,
          ),
        ),
        ctx(),
      );
      const realRoot = await realpath(root);
      expect(grant).to.deep.equal({
        policyId: "p1",
        boundModuleId: MODULE_A,
        mounts: [
          { hostPath: join(realRoot, "ro"), guestPath: "/in", writable: false },
          { hostPath: join(realRoot, "rw"), guestPath: "/out", writable: true },
        ],
        memoryLimitBytes: 64 * MIB,
        timeoutMs: 2_000,
        maxOutputBytes: 4096,
        maxWriteBytes: 2 * MIB,
        fuelLimit: 0,
        signedBy: { policySha256: createHash("sha256").update(signedBytes).digest(), keyId: k1.id },
        network: {
          allowedHosts: patterns("https://api.example.com", "https://eu.example.org"),
          maxRequests: 5,
          maxResponseBytes: MIB,
          requestTimeoutMs: 3_000,
        },
      } satisfies Grant);
    });

    it("is accepted when signed by any trusted key (rotation)", async () => {
      expect((await authorize(signed(valid(), k2), ctx())).policyId).to.equal("p1");
    });

    it("gets the daemon defaults where it says 0", async () => {
      const grant = await authorize(signed(valid(), k1), ctx());
      expect(grant).to.include({
        memoryLimitBytes: 128 * MIB,
        timeoutMs: 5_000,
        maxOutputBytes: MIB,
        network: undefined,
        boundModuleId: "",
      });
      expect(grant.mounts).to.deep.equal([]);
    });

    it("gets its fuel_limit, the daemon's default fuel limit where it says 0, and no metering by default", async () => {
      expect((await authorize(signed(valid({ fuelLimit: 1_000_000 }), k1), ctx())).fuelLimit).to.equal(1_000_000);
      expect((await authorize(signed(valid(), k1), ctx({ defaults: { ...ctx().defaults, fuelLimit: 5_000 } }))).fuelLimit).to.equal(5_000);
      expect((await authorize(signed(valid(), k1), ctx())).fuelLimit).to.equal(0);
    });

    it("may ask for exactly the ceilings", async () => {
      const grant = await authorize(signed(valid({ memoryLimitBytes: 512 * MIB, timeoutMs: 60_000, maxOutputBytes: 32 * MIB }), k1), ctx());
      expect(grant).to.include({ memoryLimitBytes: 512 * MIB, timeoutMs: 60_000, maxOutputBytes: 32 * MIB });
    });

    it("mounts through a symlink that stays inside a root, as its real path", async () => {
      const grant = await authorize(
        signed(valid({ mounts: [{ hostPath: join(root, "alias"), guestPath: "/a", writable: false }] }), k1),
        ctx(),
      );
      expect(grant.mounts[0]?.hostPath).to.equal(join(await realpath(root), "ro"));
    });
  });

  describe("check 1: no policy", () => {
    it("is refused with POLICY_REQUIRED (UNAUTHENTICATED) by default", async () => {
      const err = await expectRefused(authorize(undefined, ctx()), "POLICY_REQUIRED");
      expect(err.code).to.equal(Code.Unauthenticated);
    });

    it("treats an all-empty SignedPolicy as no policy", async () => {
      await expectRefused(authorize({ policy: new Uint8Array(), keyId: "", signature: new Uint8Array() }, ctx()), "POLICY_REQUIRED");
    });

    it("runs with defaults, no mounts and no network under --allow-unsigned", async () => {
      const grant = await authorize(undefined, ctx({ allowUnsigned: true }));
      expect(grant).to.deep.equal({
        policyId: "",
        boundModuleId: "",
        mounts: [],
        memoryLimitBytes: 128 * MIB,
        timeoutMs: 5_000,
        maxOutputBytes: MIB,
        maxWriteBytes: 2 * MIB,
        fuelLimit: 0,
        signedBy: undefined,
        network: undefined,
      } satisfies Grant);
    });

    it("still verifies a policy that is sent under --allow-unsigned", async () => {
      const s = signed(valid(), k1);
      s.signature[0] = (s.signature[0] ?? 0) ^ 1;
      await expectRefused(authorize(s, ctx({ allowUnsigned: true })), "POLICY_BAD_SIGNATURE");
    });
  });

  describe("check 2: key, signature, encoding", () => {
    it("refuses an unknown key_id with POLICY_UNKNOWN_KEY naming the key", async () => {
      const err = await expectRefused(authorize(signed(valid(), untrusted), ctx()), "POLICY_UNKNOWN_KEY");
      expect(err.code).to.equal(Code.Unauthenticated);
      expect(err.metadata).to.deep.equal({ key_id: "untrusted" });
    });

    it("refuses a policy signed by another key than the one it names (wrong key)", async () => {
      const err = await expectRefused(authorize(signed(valid(), k2, "k1"), ctx()), "POLICY_BAD_SIGNATURE");
      expect(err.code).to.equal(Code.Unauthenticated);
    });

    it("refuses a policy with one tampered byte", async () => {
      const s = signed(valid({ timeoutMs: 1000 }), k1);
      const last = s.policy.length - 1;
      s.policy[last] = (s.policy[last] ?? 0) ^ 0x01;
      await expectRefused(authorize(s, ctx()), "POLICY_BAD_SIGNATURE");
    });

    it("refuses a tampered signature", async () => {
      const s = signed(valid(), k1);
      s.signature[10] = (s.signature[10] ?? 0) ^ 0x80;
      await expectRefused(authorize(s, ctx()), "POLICY_BAD_SIGNATURE");
    });

    it("refuses a truncated or empty signature", async () => {
      const s = signed(valid(), k1);
      await expectRefused(authorize({ ...s, signature: s.signature.subarray(0, 63) }, ctx()), "POLICY_BAD_SIGNATURE");
      await expectRefused(authorize({ ...s, signature: new Uint8Array() }, ctx()), "POLICY_BAD_SIGNATURE");
    });

    it("refuses validly signed bytes that do not decode as a Policy with POLICY_MALFORMED", async () => {
      const { sign } = await import("node:crypto");
      // Field 1 (policy_id) claims 100 bytes but only 2 follow.
      const bytes = new Uint8Array([0x0a, 100, 0x41, 0x42]);
      const s = { policy: bytes, keyId: "k1", signature: new Uint8Array(sign(null, bytes, k1.privateKey)) };
      const err = await expectRefused(authorize(s, ctx()), "POLICY_MALFORMED");
      expect(err.code).to.equal(Code.Unauthenticated);
    });

    it("checks the key before the validity window", async () => {
      await expectRefused(authorize(signed({ policyId: "p", expiresAtUnix: 1 }, untrusted), ctx()), "POLICY_UNKNOWN_KEY");
    });
  });

  describe("check 3: validity window", () => {
    it("refuses an expired policy with POLICY_EXPIRED (PERMISSION_DENIED)", async () => {
      const err = await expectRefused(
        authorize(signed(valid({ expiresAtUnix: NOW_UNIX - HOUR_SECONDS / 2 }), k1), ctx()),
        "POLICY_EXPIRED",
      );
      expect(err.code).to.equal(Code.PermissionDenied);
    });

    it("refuses a policy that is not yet valid with POLICY_NOT_YET_VALID", async () => {
      const err = await expectRefused(
        authorize(signed(valid({ notBeforeUnix: NOW_UNIX + HOUR_SECONDS / 2 }), k1), ctx()),
        "POLICY_NOT_YET_VALID",
      );
      expect(err.code).to.equal(Code.PermissionDenied);
    });

    it("refuses a policy without expires_at_unix", async () => {
      await expectRefused(authorize(signed({ policyId: "forever" }, k1), ctx()), "POLICY_EXPIRED");
    });

    it("refuses an empty window (expires before it starts)", async () => {
      const p = valid({ notBeforeUnix: NOW_UNIX + 10, expiresAtUnix: NOW_UNIX + 5 });
      await expectRefused(authorize(signed(p, k1), ctx()), "POLICY_EXPIRED");
    });

    it("allows the named clock skew on both ends, and not a second more", async () => {
      const skew = POLICY_CLOCK_SKEW_SECONDS;
      await authorize(signed(valid({ expiresAtUnix: NOW_UNIX - skew }), k1), ctx());
      await authorize(signed(valid({ notBeforeUnix: NOW_UNIX + skew, expiresAtUnix: NOW_UNIX + HOUR_SECONDS }), k1), ctx());
      await expectRefused(authorize(signed(valid({ expiresAtUnix: NOW_UNIX - skew - 1 }), k1), ctx()), "POLICY_EXPIRED");
      await expectRefused(
        authorize(signed(valid({ notBeforeUnix: NOW_UNIX + skew + 1, expiresAtUnix: NOW_UNIX + HOUR_SECONDS }), k1), ctx()),
        "POLICY_NOT_YET_VALID",
      );
    });

    it("checks the validity window before the ceilings", async () => {
      const p = valid({ expiresAtUnix: NOW_UNIX - HOUR_SECONDS, timeoutMs: 10_000_000 });
      await expectRefused(authorize(signed(p, k1), ctx()), "POLICY_EXPIRED");
    });
  });

  describe("check 4: module binding", () => {
    it("refuses a grant bound to another module with POLICY_MODULE_MISMATCH", async () => {
      const grant = await authorize(signed(valid({ moduleId: MODULE_A }), k1), ctx());
      const err = await expectRefused(() => bindToModule(grant, MODULE_B), "POLICY_MODULE_MISMATCH");
      expect(err.code).to.equal(Code.PermissionDenied);
      expect(err.metadata).to.include({ policy_module_id: MODULE_A, module_id: MODULE_B });
    });

    it("accepts the module it is bound to, and any module when unbound", async () => {
      bindToModule(await authorize(signed(valid({ moduleId: MODULE_A }), k1), ctx()), MODULE_A);
      bindToModule(await authorize(signed(valid(), k1), ctx()), MODULE_B);
    });
  });

  describe("check 5: operator ceilings", () => {
    const cases: Array<[string, Partial<Policy>]> = [
      ["memory_limit_bytes", { memoryLimitBytes: 512 * MIB + 1 }],
      ["timeout_ms", { timeoutMs: 60_001 }],
      ["max_output_bytes", { maxOutputBytes: 32 * MIB + 1 }],
      ["max_write_bytes", { maxWriteBytes: 8 * MIB + 1 }],
      ["fuel_limit", { fuelLimit: 1_000_001 }],
      ["max_http_requests", { maxHttpRequests: 51 }],
      ["max_http_response_bytes", { maxHttpResponseBytes: 4 * MIB + 1 }],
      ["http_timeout_ms", { httpTimeoutMs: 30_001 }],
    ];
    for (const [field, extra] of cases) {
      it(`refuses ${field} above the ceiling with POLICY_CEILING_EXCEEDED, never clamping`, async () => {
        const err = await expectRefused(authorize(signed(valid(extra), k1), ctx()), "POLICY_CEILING_EXCEEDED");
        expect(err.code).to.equal(Code.PermissionDenied);
        expect(err.metadata["field"]).to.equal(field);
      });
    }

    it("checks the ceilings before the mounts", async () => {
      const p = valid({ timeoutMs: 60_001, mounts: [{ hostPath: outside, guestPath: "/x", writable: false }] });
      await expectRefused(authorize(signed(p, k1), ctx()), "POLICY_CEILING_EXCEEDED");
    });
  });

  describe("network: network and allowed_hosts", () => {
    const net = (hosts: string[], extra: Partial<Policy> = {}): Partial<Policy> => valid({ network: true, allowedHosts: hosts, ...extra });

    it("refuses network: true with no allowed_hosts as POLICY_MALFORMED", async () => {
      const err = await expectRefused(authorize(signed(valid({ network: true }), k1), ctx()), "POLICY_MALFORMED");
      expect(err.message).to.contain("allowed_hosts is empty");
      expect(err.metadata).to.include({ field: "allowed_hosts" });
    });

    it("refuses allowed_hosts without network: true as POLICY_MALFORMED", async () => {
      const err = await expectRefused(
        authorize(signed(valid({ allowedHosts: ["https://api.example.com"] }), k1), ctx()),
        "POLICY_MALFORMED",
      );
      expect(err.message).to.contain("network is false");
    });

    for (const entry of [
      "api.example.com",
      "ftp://api.example.com",
      "https://api.example.com/v1",
      "https://user@api.example.com",
      "https://*",
      "https://*.1.2",
      "https://api.example.com:0",
      "https://api.example.com:99999",
      "https://*.[::1]",
      "",
    ]) {
      it(`refuses the malformed allowed_hosts entry ${JSON.stringify(entry)} as POLICY_MALFORMED`, async () => {
        await expectRefused(authorize(signed(net([entry]), k1), ctx()), "POLICY_MALFORMED");
      });
    }

    it("grants entries within the operator's patterns, with the daemon's defaults for the limits", async () => {
      const grant = await authorize(
        signed(net(["https://API.example.com:443", "https://a.b.example.org", "https://*.x.example.org", "http://127.0.0.1:8080"]), k1),
        ctx(),
      );
      expect(grant.network?.allowedHosts.map((p) => `${p.scheme}://${p.wildcard ? "*." : ""}${p.host}:${p.port}`)).to.deep.equal([
        "https://api.example.com:443",
        "https://a.b.example.org:443",
        "https://*.x.example.org:443",
        "http://127.0.0.1:8080",
      ]);
      expect(grant.network).to.include({ maxRequests: 10, maxResponseBytes: MIB, requestTimeoutMs: 3_000 });
    });

    const outside: Array<[string, string]> = [
      ["another host", "https://evil.example.com"],
      ["another port", "https://api.example.com:8443"],
      ["another scheme", "http://api.example.com"],
      ["a wildcard wider than the operator's exact name", "https://*.example.com"],
      ["the wildcard's own name, which *. does not cover", "https://example.org"],
      ["an IP literal the operator did not name", "http://127.0.0.2:8080"],
      ["another spelling of an IP literal's neighbour", "http://[::ffff:127.0.0.1]:8080"],
    ];
    for (const [what, entry] of outside) {
      it(`refuses ${what} (${entry}) as POLICY_CEILING_EXCEEDED`, async () => {
        const err = await expectRefused(authorize(signed(net([entry]), k1), ctx()), "POLICY_CEILING_EXCEEDED");
        expect(err.code).to.equal(Code.PermissionDenied);
        expect(err.metadata).to.include({ field: "allowed_hosts", requested: entry });
      });
    }

    it("refuses every entry when the operator allows no host", async () => {
      const c = ctx();
      c.ceilings = { ...c.ceilings, networkHosts: [] };
      const err = await expectRefused(authorize(signed(net(["https://api.example.com"]), k1), c), "POLICY_CEILING_EXCEEDED");
      expect(err.message).to.contain("--allow-network-host");
    });
  });

  describe("size caps", () => {
    it("refuses policy bytes over MAX_POLICY_BYTES with POLICY_TOO_LARGE before looking at the key or the signature", async () => {
      const huge = { policy: new Uint8Array(MAX_POLICY_BYTES + 1), keyId: "untrusted", signature: new Uint8Array(64) };
      const err = await expectRefused(authorize(huge, ctx()), "POLICY_TOO_LARGE");
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(err.metadata).to.include({ limit: "bytes", max: String(MAX_POLICY_BYTES) });
    });

    it("accepts MAX_POLICY_MOUNTS mounts and refuses one more with POLICY_TOO_LARGE", async () => {
      const mounts = (n: number) =>
        Array.from({ length: n }, (_, i) => ({ hostPath: join(root, "ro"), guestPath: `/m${i}`, writable: false }));
      const grant = await authorize(signed(valid({ mounts: mounts(MAX_POLICY_MOUNTS) }), k1), ctx());
      expect(grant.mounts).to.have.length(MAX_POLICY_MOUNTS);
      const err = await expectRefused(authorize(signed(valid({ mounts: mounts(MAX_POLICY_MOUNTS + 1) }), k1), ctx()), "POLICY_TOO_LARGE");
      expect(err.metadata).to.include({ limit: "mounts", max: String(MAX_POLICY_MOUNTS) });
    });
  });

  describe("check 6: mounts", () => {
    async function refusedMount(hostPath: string, guestPath = "/m", roots?: string[]): Promise<void> {
      const p = valid({ mounts: [{ hostPath, guestPath, writable: true }] });
      const c = ctx();
      if (roots !== undefined) c.ceilings = { ...c.ceilings, allowedRoots: roots };
      const err = await expectRefused(authorize(signed(p, k1), c), "POLICY_MOUNT_DENIED");
      expect(err.code).to.equal(Code.PermissionDenied);
      expect(err.metadata).to.deep.equal({ mount: guestPath });
      expect(err.message).to.contain(guestPath);
    }

    it("refuses a host path outside the allowed roots", async () => {
      await refusedMount(outside);
    });

    it("refuses a symlink inside a root that points outside it", async () => {
      await refusedMount(join(root, "escape"));
    });

    it("refuses a .. path that climbs out of a root", async () => {
      // Spelled out by hand: path.join would normalize the .. away before the policy is signed.
      await refusedMount(`${root}/rw/../../outside`);
    });

    it("refuses a host path that does not exist", async () => {
      await refusedMount(join(root, "missing"));
    });

    it("refuses a host path that is a file, not a directory", async () => {
      await refusedMount(join(root, "file.txt"));
    });

    it("refuses a relative host path", async () => {
      await refusedMount("root/ro");
    });

    it("refuses every mount when no root is configured", async () => {
      await refusedMount(join(root, "ro"), "/m", []);
    });

    it("refuses a mount whose allowed root does not exist", async () => {
      await refusedMount(join(root, "ro"), "/m", [join(tmp.path, "no-such-root")]);
    });

    for (const guestPath of ["relative", "/trailing/", "/a//b", "/a/../b", "/a/./b", ""]) {
      it(`refuses the guest path ${JSON.stringify(guestPath)}, which is not absolute and normalized`, async () => {
        await refusedMount(join(root, "ro"), guestPath);
      });
    }

    it("refuses two mounts at the same guest path, naming the second", async () => {
      const p = valid({
        mounts: [
          { hostPath: join(root, "ro"), guestPath: "/data", writable: false },
          { hostPath: join(root, "rw"), guestPath: "/data", writable: true },
        ],
      });
      const err = await expectRefused(authorize(signed(p, k1), ctx()), "POLICY_MOUNT_DENIED");
      expect(err.message).to.contain("twice");
    });

    it("refuses nested guest paths, but not siblings sharing a prefix", async () => {
      const nested = valid({
        mounts: [
          { hostPath: join(root, "ro"), guestPath: "/data", writable: false },
          { hostPath: join(root, "rw"), guestPath: "/data/out", writable: true },
        ],
      });
      const err = await expectRefused(authorize(signed(nested, k1), ctx()), "POLICY_MOUNT_DENIED");
      expect(err.metadata).to.deep.equal({ mount: "/data/out" });
      const siblings = valid({
        mounts: [
          { hostPath: join(root, "ro"), guestPath: "/data", writable: false },
          { hostPath: join(root, "rw"), guestPath: "/data2", writable: true },
        ],
      });
      expect((await authorize(signed(siblings, k1), ctx())).mounts).to.have.length(2);
    });

    it("refuses / together with any other mount", async () => {
      const p = valid({
        mounts: [
          { hostPath: join(root, "ro"), guestPath: "/", writable: false },
          { hostPath: join(root, "rw"), guestPath: "/out", writable: true },
        ],
      });
      await expectRefused(authorize(signed(p, k1), ctx()), "POLICY_MOUNT_DENIED");
    });
  });
});

/** Passes `value` through after handing it to `see` (to keep the signed bytes an inline call produced). */
function keep<T>(see: (value: T) => void, value: T): T {
  see(value);
  return value;
}
