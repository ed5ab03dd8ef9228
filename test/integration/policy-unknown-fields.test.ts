import { sign } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { Mount, Outcome, Policy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, tempDir, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

const HOUR_SECONDS = 3600;

/**
 * A field a later contract might add to Policy (say, "require human approval"):
 * a daemon that does not know it must refuse the policy, not run it with the
 * restriction silently dropped. Far above the numbers in use or reserved.
 */
const FUTURE_FIELD_NUMBER = 99;

describe("signed policies with fields this daemon does not know (real daemon)", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  let daemon: TestDaemon;
  let authority: TestKey;
  let moduleId: string;
  let root: string;

  before(async function () {
    tmp = await tempDir("unknown-fields");
    const keysDir = join(tmp.path, "keys");
    root = join(tmp.path, "root");
    await mkdir(keysDir);
    await mkdir(join(root, "data"), { recursive: true });
    authority = makeKey("authority");
    await writePublicKeys(keysDir, [authority]);
    daemon = await startDaemon({ args: ["--trusted-keys", keysDir, "--allow-mount-root", root] });
    const compiled = await daemon.compile({ input: { $case: "source", value: "fn main() {}" } });
    expect(compiled.ok).to.equal(true);
    moduleId = compiled.moduleId;
  });

  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  /** A policy valid now, mounting root/data read-only at /data, encoded by the contract's own encoder. */
  function policyBytes(extraInMount?: Uint8Array): Uint8Array {
    const now = Math.floor(Date.now() / 1000);
    const writer = Policy.encode(
      Policy.fromPartial({ policyId: "unknown-fields", notBeforeUnix: now - 60, expiresAtUnix: now + HOUR_SECONDS }),
    );
    const mount = Mount.encode(Mount.fromPartial({ hostPath: join(root, "data"), guestPath: "/data", writable: false })).finish();
    writer.tag(5, WireType.LengthDelimited).bytes(Buffer.concat([mount, extraInMount ?? new Uint8Array()]));
    return writer.finish();
  }

  /** Executes under `bytes` signed by the trusted authority: the signature is good, only the content is in question. */
  function executeSigned(bytes: Uint8Array): ReturnType<TestDaemon["execute"]> {
    return daemon.execute({
      target: moduleTarget(moduleId),
      policy: { policy: Buffer.from(bytes), keyId: authority.id, signature: sign(null, bytes, authority.privateKey) },
    });
  }

  it("runs the same policy without the extra field (the control)", async function () {
    const response = await executeSigned(policyBytes());
    expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode).to.equal(0);
  });

  it("refuses a validly signed policy with an unknown top-level field: UNAUTHENTICATED, POLICY_MALFORMED naming the field number", async function () {
    const future = new BinaryWriter().tag(FUTURE_FIELD_NUMBER, WireType.Varint).bool(true).finish();
    const r = await rejection(executeSigned(Buffer.concat([policyBytes(), future])));
    expect({ code: r.code, reason: r.reason }, r.details).to.deep.equal({ code: status.UNAUTHENTICATED, reason: "POLICY_MALFORMED" });
    expect(r.details).to.contain(`Policy has field ${FUTURE_FIELD_NUMBER}`);
  });

  it("refuses a validly signed policy with an unknown field inside a mount, naming the mount", async function () {
    const future = new BinaryWriter().tag(4, WireType.LengthDelimited).string("noexec").finish();
    const r = await rejection(executeSigned(policyBytes(future)));
    expect({ code: r.code, reason: r.reason }, r.details).to.deep.equal({ code: status.UNAUTHENTICATED, reason: "POLICY_MALFORMED" });
    expect(r.details).to.contain("Policy.mounts[0] has field 4");
  });
});
