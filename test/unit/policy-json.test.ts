import { expect } from "chai";
import { parsePolicyJson } from "../../src/policy/policy-json.js";
import { parseSignedPolicyFile } from "../../src/policy/signed-policy-file.js";

describe("policy JSON parsing", () => {
  it("accepts snake_case and camelCase names, and 64-bit integers as strings", () => {
    const snake = parsePolicyJson({
      policy_id: "p",
      not_before_unix: "-5",
      expires_at_unix: 100,
      module_id: "m",
      mounts: [{ host_path: "/h", guest_path: "/g", writable: true }],
      memory_limit_bytes: "9007199254740991",
      timeout_ms: 7,
      max_output_bytes: 8,
      max_write_bytes: 9,
      fuel_limit: "123456789",
      network: true,
      allowed_hosts: ["https://api.example.com"],
      max_http_requests: 3,
      max_http_response_bytes: "4096",
      http_timeout_ms: 500,
    });
    const camel = parsePolicyJson({
      policyId: "p",
      notBeforeUnix: -5,
      expiresAtUnix: "100",
      moduleId: "m",
      mounts: [{ hostPath: "/h", guestPath: "/g", writable: true }],
      memoryLimitBytes: 9007199254740991,
      timeoutMs: 7,
      maxOutputBytes: "8",
      maxWriteBytes: 9,
      fuelLimit: 123456789,
      network: true,
      allowedHosts: ["https://api.example.com"],
      maxHttpRequests: 3,
      maxHttpResponseBytes: 4096,
      httpTimeoutMs: 500,
    });
    expect(snake).to.deep.equal(camel);
    expect(snake).to.deep.equal({
      ok: true,
      value: {
        policyId: "p",
        notBeforeUnix: -5,
        expiresAtUnix: 100,
        moduleId: "m",
        mounts: [{ hostPath: "/h", guestPath: "/g", writable: true }],
        memoryLimitBytes: 9007199254740991,
        timeoutMs: 7,
        maxOutputBytes: 8,
        maxWriteBytes: 9,
        fuelLimit: 123456789,
        network: true,
        allowedHosts: ["https://api.example.com"],
        maxHttpRequests: 3,
        maxHttpResponseBytes: 4096,
        httpTimeoutMs: 500,
      },
    });
  });

  const bad: Array<[string, unknown, string]> = [
    ["a non-object", [1], "object"],
    ["an unknown field", { policyId: "p", mount: [] }, "mount"],
    ["an unknown mount field", { mounts: [{ hostPath: "/h", guestPath: "/g", readonly: true }] }, "readonly"],
    ["both spellings of one field", { timeoutMs: 1, timeout_ms: 2 }, "both"],
    ["a fractional number", { timeoutMs: 1.5 }, "timeout_ms"],
    ["a negative unsigned number", { maxOutputBytes: -1 }, "max_output_bytes"],
    ["a timeout beyond 32 bits", { timeoutMs: 2 ** 32 }, "timeout_ms"],
    ["an unsafe 64-bit integer", { memoryLimitBytes: "18446744073709551615" }, "memory_limit_bytes"],
    ["a string boolean", { network: "yes" }, "network"],
    ["mounts that are not an array", { mounts: {} }, "mounts"],
    ["allowed_hosts that is a string", { network: true, allowedHosts: "https://a.example" }, "allowed_hosts"],
    ["allowed_hosts with a non-string entry", { network: true, allowed_hosts: [1] }, "allowed_hosts"],
  ];
  for (const [what, value, mention] of bad) {
    it(`rejects ${what}`, () => {
      const result = parsePolicyJson(value);
      if (result.ok) expect.fail("accepted");
      expect(result.error).to.contain(mention);
    });
  }

  it("parses a signed policy file with keyId or key_id, and rejects missing parts", () => {
    const a = parseSignedPolicyFile(JSON.stringify({ policy: "CgFw", keyId: "k", signature: "AAEC" }));
    const b = parseSignedPolicyFile(JSON.stringify({ policy: "CgFw", key_id: "k", signature: "AAEC" }));
    expect(a).to.deep.equal(b);
    if (!a.ok) expect.fail(a.error);
    expect([...a.value.policy]).to.deep.equal([0x0a, 0x01, 0x70]);
    expect([...a.value.signature]).to.deep.equal([0, 1, 2]);
    expect(parseSignedPolicyFile("nope").ok).to.equal(false);
    expect(parseSignedPolicyFile(JSON.stringify({ policy: "CgFw", signature: "AAEC" })).ok).to.equal(false);
    expect(parseSignedPolicyFile(JSON.stringify({ policy: "not base64!", keyId: "k", signature: "AAEC" })).ok).to.equal(false);
  });
});

describe("policy examples", () => {
  it("every examples/policies/*.json parses as a policy", async () => {
    const { readdir, readFile } = await import("node:fs/promises");
    const { fileURLToPath } = await import("node:url");
    const dir = fileURLToPath(new URL("../../../examples/policies/", import.meta.url));
    const files = (await readdir(dir)).filter((f) => f.endsWith(".json"));
    expect(files).to.not.be.empty;
    for (const file of files) {
      const result = parsePolicyJson(JSON.parse(await readFile(dir + file, "utf8")));
      expect(result.ok, `${file}: ${result.ok ? "" : result.error}`).to.equal(true);
    }
  });
});
