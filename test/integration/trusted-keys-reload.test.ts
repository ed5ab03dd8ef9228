import { execFileSync } from "node:child_process";
import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { MAX_TRUSTED_KEY_FILE_BYTES } from "../../src/limits.js";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

/** How long the test waits for the daemon to act on a SIGHUP. */
const RELOAD_WAIT_MS = 10_000;
const HOUR_SECONDS = 3600;

describe("trusted key reload (real daemon)", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  let daemon: TestDaemon | undefined;

  beforeEach(async function () {
    tmp = await tempDir("key-reload");
  });

  afterEach(async function () {
    await daemon?.stop();
    daemon = undefined;
    await tmp.remove();
  });

  it("a FIFO, a symlink and an oversize *.pub do not wedge reload: a key removed afterwards stops being trusted", async function () {
    const keysDir = join(tmp.path, "keys");
    const outside = join(tmp.path, "outside");
    await mkdir(keysDir);
    await mkdir(outside);
    const [authority, doomed, linked, big] = [makeKey("authority"), makeKey("doomed"), makeKey("linked"), makeKey("big")];
    await writePublicKeys(keysDir, [authority, doomed]);
    daemon = await startDaemon({ args: ["--trusted-keys", keysDir] });
    const compiled = await daemon.compile({ input: { $case: "source", value: "fn main() {}" } });
    expect(compiled.ok).to.equal(true);
    const now = Math.floor(Date.now() / 1000);
    const requestSignedBy = (key: TestKey): Parameters<TestDaemon["execute"]>[0] => ({
      target: moduleTarget(compiled.moduleId),
      policy: wire(signed({ policyId: key.id, notBeforeUnix: now - 60, expiresAtUnix: now + HOUR_SECONDS }, key)),
    });
    expect((await daemon.execute(requestSignedBy(doomed))).outcome).to.equal(Outcome.OUTCOME_EXITED);

    // A FIFO nobody writes to: reading it the plain way blocks for ever.
    execFileSync("mkfifo", [join(keysDir, "fifo.pub")]);
    // A valid key, but reached through a symlink out of the directory.
    await writePublicKeys(outside, [linked]);
    await symlink(join(outside, "linked.pub"), join(keysDir, "linked.pub"));
    // A valid key buried in more bytes than a key file may have.
    await writeFile(join(keysDir, "big.pub"), "#".repeat(MAX_TRUSTED_KEY_FILE_BYTES) + "\n" + big.publicPem);
    daemon.process.kill("SIGHUP");

    await rm(join(keysDir, "doomed.pub"));
    daemon.process.kill("SIGHUP");

    const deadline = Date.now() + RELOAD_WAIT_MS;
    let refused = await rejection(daemon.execute(requestSignedBy(doomed))).catch(() => undefined);
    while (refused === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      refused = await rejection(daemon.execute(requestSignedBy(doomed))).catch(() => undefined);
    }
    expect(refused, `a policy signed by the removed key still runs ${RELOAD_WAIT_MS} ms after SIGHUP:\n${daemon.logs()}`).to.not.equal(
      undefined,
    );
    expect({ code: refused!.code, reason: refused!.reason }).to.deep.equal({ code: status.UNAUTHENTICATED, reason: "POLICY_UNKNOWN_KEY" });

    // The key that stayed still works; none of the three odd files was trusted.
    expect((await daemon.execute(requestSignedBy(authority))).outcome).to.equal(Outcome.OUTCOME_EXITED);
    for (const key of [linked, big]) {
      expect((await rejection(daemon.execute(requestSignedBy(key)))).reason, key.id).to.equal("POLICY_UNKNOWN_KEY");
    }
    const logs = daemon.logs();
    expect(logs).to.match(/fifo\.pub: it is a FIFO, not a regular file/);
    expect(logs).to.match(/linked\.pub: it is a symbolic link/);
    expect(logs).to.match(/big\.pub: it has \d+ bytes, more than the \d+ a key file may have/);
  });
});
