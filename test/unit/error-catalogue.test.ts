import { Metadata, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import { REASONS, type Reason } from "../../src/errors/reasons.js";
import { errorInfoOf, toServiceError } from "../../src/grpc/status.js";

const README = readFileSync(fileURLToPath(new URL("../../../README.md", import.meta.url)), "utf8");

describe("error catalogue", function () {
  const documented = new Map<string, string>();
  for (const match of README.matchAll(/^\| `([A-Z_]+)` \| ([A-Z_]+) \|/gm)) documented.set(match[1]!, match[2]!);

  it("the README documents every reason with its gRPC status, and nothing else", function () {
    const catalogued = Object.entries(REASONS).map(([reason, info]) => [reason, info.code.toUpperCase()]);
    expect([...documented.entries()].sort()).to.deep.equal(catalogued.sort());
  });

  for (const reason of Object.keys(REASONS) as Reason[]) {
    it(`${reason} becomes gRPC ${REASONS[reason].code.toUpperCase()} with its ErrorInfo`, function () {
      const e = toServiceError(new SandboxError(reason, "why it failed", { metadata: { mount: "/data" } }));
      expect(e.code).to.equal(status[REASONS[reason].code.toUpperCase() as keyof typeof status]);
      expect(e.details).to.equal("why it failed");
      const info = errorInfoOf(e.metadata as Metadata);
      expect(info).to.deep.include({ reason, domain: "sandboxd", metadata: new Map([["mount", "/data"]]) });
    });
  }

  it("an unknown error becomes INTERNAL without leaking its message", function () {
    const e = toServiceError(new Error("secret path /root/.ssh/id_ed25519"));
    expect(e.code).to.equal(status.INTERNAL);
    expect(e.details).to.not.contain("secret");
    expect(errorInfoOf(e.metadata as Metadata)?.reason).to.equal("INTERNAL");
  });
});
