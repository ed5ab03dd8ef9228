import { status } from "@grpc/grpc-js";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import type { Reason } from "../../src/errors/reasons.js";
import { MAX_POLICY_BYTES, MAX_POLICY_MOUNTS } from "../../src/limits.js";
import { Outcome, type Policy, type SignedPolicy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

/**
 * Reads /in/input.txt, writes /out/result.txt, tries to write into the read-only
 * mount, and reports. Its first act is to drop a marker in /out: a refused run
 * that left the marker behind would prove the script ran anyway.
 */
const SCRIPT = `
use std::fs;
fn main() {
    let _ = fs::write("/out/ran", "ran");
    let input = fs::read_to_string("/in/input.txt").expect("read /in/input.txt");
    fs::write("/out/result.txt", input.to_uppercase()).expect("write /out/result.txt");
    let readonly_write_refused = fs::write("/in/forbidden.txt", "x").is_err();
    println!("{{\\"read\\":{:?},\\"readonly_write_refused\\":{}}}", input, readonly_write_refused);
}
`;

const MAX_TIMEOUT_MS = 5_000;
const MAX_MEMORY_BYTES = 256 * 1024 * 1024;
const MAX_OUTPUT_BYTES = 1024 * 1024;
const HOUR_SECONDS = 3600;
const RELOAD_WAIT_MS = 10_000;

describe("signed policies (real daemon, real rustc, our WASI host)", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  let keysDir: string;
  let root: string;
  let outside: string;
  let authority: TestKey;
  let stranger: TestKey;
  let daemon: TestDaemon;
  let moduleId: string;
  let caseCounter = 0;

  before(async function () {
    tmp = await tempDir("policy-it");
    keysDir = join(tmp.path, "keys");
    root = join(tmp.path, "root");
    outside = join(tmp.path, "outside");
    for (const dir of [keysDir, root, join(root, "in"), outside]) await mkdir(dir);
    await writeFile(join(root, "in", "input.txt"), "hello from the host");
    authority = makeKey("authority");
    stranger = makeKey("stranger");
    await writePublicKeys(keysDir, [authority]);
    daemon = await startDaemon({
      args: [
        "--trusted-keys",
        keysDir,
        "--allow-mount-root",
        root,
        "--max-timeout-ms",
        String(MAX_TIMEOUT_MS),
        "--max-memory-bytes",
        String(MAX_MEMORY_BYTES),
        "--max-output-bytes",
        String(MAX_OUTPUT_BYTES),
      ],
    });
    const compiled = await daemon.compile({ input: { $case: "source", value: SCRIPT } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    moduleId = compiled.moduleId;
  });

  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  const nowUnix = (): number => Math.floor(Date.now() / 1000);

  /** A fresh writable directory inside the allowed root, so each case has its own marker. */
  async function freshOut(): Promise<string> {
    const dir = join(root, `out-${++caseCounter}`);
    await mkdir(dir);
    return dir;
  }

  /** A policy valid now, mounting /in read-only and `out` writable at /out, with `extra` on top. */
  function policy(out: string, extra: Partial<Policy> = {}): Partial<Policy> {
    return {
      policyId: `case-${caseCounter}`,
      notBeforeUnix: nowUnix() - 60,
      expiresAtUnix: nowUnix() + HOUR_SECONDS,
      mounts: [
        { hostPath: join(root, "in"), guestPath: "/in", writable: false },
        { hostPath: out, guestPath: "/out", writable: true },
      ],
      ...extra,
    };
  }

  async function ran(out: string): Promise<boolean> {
    return readFile(join(out, "ran")).then(
      () => true,
      () => false,
    );
  }

  /** Executes with `signedPolicy`, expects the refusal, and checks the script never ran. */
  async function expectRefused(signedPolicy: SignedPolicy | undefined, out: string, code: status, reason: Reason): Promise<string> {
    const r = await rejection(daemon.execute({ target: moduleTarget(moduleId), policy: signedPolicy }));
    expect({ code: r.code, reason: r.reason }, r.details).to.deep.equal({ code, reason });
    expect(await ran(out), "the refused script ran").to.equal(false);
    return r.details;
  }

  it("runs a valid policy: reads the read-only mount, writes the writable one, cannot write the read-only one", async function () {
    const out = await freshOut();
    const response = await daemon.execute({ target: moduleTarget(moduleId), policy: wire(signed(policy(out), authority)) });
    expect(response.outcome, response.stderr.toString()).to.equal(Outcome.OUTCOME_EXITED);
    expect(response.exitCode, response.stderr.toString()).to.equal(0);
    expect(JSON.parse(response.stdout.toString())).to.deep.equal({ read: "hello from the host", readonly_write_refused: true });
    expect(await readFile(join(out, "result.txt"), "utf8")).to.equal("HELLO FROM THE HOST");
    expect(await ran(out)).to.equal(true);
    await readFile(join(root, "in", "forbidden.txt")).then(
      () => expect.fail("the guest wrote into a read-only mount"),
      () => {},
    );
  });

  it("refuses a request without a policy: UNAUTHENTICATED, POLICY_REQUIRED", async function () {
    await expectRefused(undefined, await freshOut(), status.UNAUTHENTICATED, "POLICY_REQUIRED");
  });

  it("refuses a tampered policy byte: UNAUTHENTICATED, POLICY_BAD_SIGNATURE", async function () {
    const out = await freshOut();
    const s = signed(policy(out, { timeoutMs: 1000 }), authority);
    const last = s.policy.length - 1;
    s.policy[last] = (s.policy[last] ?? 0) ^ 0x01;
    await expectRefused(wire(s), out, status.UNAUTHENTICATED, "POLICY_BAD_SIGNATURE");
  });

  it("refuses a tampered signature: UNAUTHENTICATED, POLICY_BAD_SIGNATURE", async function () {
    const out = await freshOut();
    const s = signed(policy(out), authority);
    s.signature[0] = (s.signature[0] ?? 0) ^ 0x01;
    await expectRefused(wire(s), out, status.UNAUTHENTICATED, "POLICY_BAD_SIGNATURE");
  });

  it("refuses a policy signed with the wrong key: UNAUTHENTICATED, POLICY_BAD_SIGNATURE", async function () {
    const out = await freshOut();
    await expectRefused(wire(signed(policy(out), stranger, "authority")), out, status.UNAUTHENTICATED, "POLICY_BAD_SIGNATURE");
  });

  it("refuses an unknown key: UNAUTHENTICATED, POLICY_UNKNOWN_KEY", async function () {
    const out = await freshOut();
    await expectRefused(wire(signed(policy(out), stranger)), out, status.UNAUTHENTICATED, "POLICY_UNKNOWN_KEY");
  });

  it("refuses an expired policy: PERMISSION_DENIED, POLICY_EXPIRED", async function () {
    const out = await freshOut();
    const p = policy(out, { notBeforeUnix: nowUnix() - 2 * HOUR_SECONDS, expiresAtUnix: nowUnix() - HOUR_SECONDS });
    await expectRefused(wire(signed(p, authority)), out, status.PERMISSION_DENIED, "POLICY_EXPIRED");
  });

  it("refuses a policy that is not yet valid: PERMISSION_DENIED, POLICY_NOT_YET_VALID", async function () {
    const out = await freshOut();
    const p = policy(out, { notBeforeUnix: nowUnix() + HOUR_SECONDS, expiresAtUnix: nowUnix() + 2 * HOUR_SECONDS });
    await expectRefused(wire(signed(p, authority)), out, status.PERMISSION_DENIED, "POLICY_NOT_YET_VALID");
  });

  it("refuses a policy bound to another module: PERMISSION_DENIED, POLICY_MODULE_MISMATCH", async function () {
    const out = await freshOut();
    const p = policy(out, { moduleId: "f".repeat(64) });
    await expectRefused(wire(signed(p, authority)), out, status.PERMISSION_DENIED, "POLICY_MODULE_MISMATCH");
  });

  it("refuses a source request whose compiled module is not the bound one: POLICY_MODULE_MISMATCH after compiling", async function () {
    const out = await freshOut();
    const p = wire(signed(policy(out, { moduleId: "f".repeat(64) }), authority));
    const r = await rejection(daemon.execute({ target: sourceTarget(SCRIPT), policy: p }));
    expect({ code: r.code, reason: r.reason }).to.deep.equal({ code: status.PERMISSION_DENIED, reason: "POLICY_MODULE_MISMATCH" });
    expect(await ran(out)).to.equal(false);
  });

  it("runs a policy bound to this very module", async function () {
    const out = await freshOut();
    const response = await daemon.execute({ target: moduleTarget(moduleId), policy: wire(signed(policy(out, { moduleId }), authority)) });
    expect(response.exitCode, response.stderr.toString()).to.equal(0);
    expect(await ran(out)).to.equal(true);
  });

  const ceilings: Array<[string, Partial<Policy>]> = [
    ["timeout_ms", { timeoutMs: MAX_TIMEOUT_MS + 1 }],
    ["memory_limit_bytes", { memoryLimitBytes: MAX_MEMORY_BYTES + 1 }],
    ["max_output_bytes", { maxOutputBytes: MAX_OUTPUT_BYTES + 1 }],
  ];
  for (const [field, extra] of ceilings) {
    it(`refuses ${field} above the operator ceiling: PERMISSION_DENIED, POLICY_CEILING_EXCEEDED`, async function () {
      const out = await freshOut();
      const details = await expectRefused(
        wire(signed(policy(out, extra), authority)),
        out,
        status.PERMISSION_DENIED,
        "POLICY_CEILING_EXCEEDED",
      );
      expect(details).to.contain(field);
    });
  }

  it("refuses a mount outside the allowed roots: PERMISSION_DENIED, POLICY_MOUNT_DENIED naming the mount", async function () {
    const details = await expectRefused(wire(signed(policy(outside), authority)), outside, status.PERMISSION_DENIED, "POLICY_MOUNT_DENIED");
    expect(details).to.contain("/out");
  });

  it("refuses a mount through a symlink that leaves the root: PERMISSION_DENIED, POLICY_MOUNT_DENIED", async function () {
    const link = join(root, "sneaky");
    await symlink(outside, link);
    try {
      await expectRefused(wire(signed(policy(link), authority)), outside, status.PERMISSION_DENIED, "POLICY_MOUNT_DENIED");
    } finally {
      await rm(link);
    }
  });

  it("refuses network: true without allowed_hosts (UNAUTHENTICATED/POLICY_MALFORMED) instead of running without it", async function () {
    const out = await freshOut();
    const details = await expectRefused(
      wire(signed(policy(out, { network: true }), authority)),
      out,
      status.UNAUTHENTICATED,
      "POLICY_MALFORMED",
    );
    expect(details).to.contain("allowed_hosts");
    const streamed = await rejection(
      daemon.stream({ target: moduleTarget(moduleId), policy: wire(signed(policy(out, { network: true }), authority)) }),
    );
    expect({ code: streamed.code, reason: streamed.reason }).to.deep.equal({ code: status.UNAUTHENTICATED, reason: "POLICY_MALFORMED" });
    expect(await ran(out)).to.equal(false);
  });

  it("refuses a network grant beyond this daemon's --allow-network-host (none here): PERMISSION_DENIED, POLICY_CEILING_EXCEEDED", async function () {
    const out = await freshOut();
    const details = await expectRefused(
      wire(signed(policy(out, { network: true, allowedHosts: ["https://api.example.com"] }), authority)),
      out,
      status.PERMISSION_DENIED,
      "POLICY_CEILING_EXCEEDED",
    );
    expect(details).to.contain("https://api.example.com");
  });

  it("refuses policy bytes over MAX_POLICY_BYTES (INVALID_ARGUMENT/POLICY_TOO_LARGE) before verifying them", async function () {
    const out = await freshOut();
    const huge = { policy: Buffer.alloc(MAX_POLICY_BYTES + 1), keyId: "authority", signature: Buffer.alloc(64) };
    await expectRefused(huge, out, status.INVALID_ARGUMENT, "POLICY_TOO_LARGE");
  });

  it("refuses a policy with more than MAX_POLICY_MOUNTS mounts: INVALID_ARGUMENT, POLICY_TOO_LARGE", async function () {
    const out = await freshOut();
    const mounts = Array.from({ length: MAX_POLICY_MOUNTS + 1 }, (_, i) => ({
      hostPath: join(root, "in"),
      guestPath: `/in${i}`,
      writable: false,
    }));
    const details = await expectRefused(wire(signed(policy(out, { mounts }), authority)), out, status.INVALID_ARGUMENT, "POLICY_TOO_LARGE");
    expect(details).to.contain(String(MAX_POLICY_MOUNTS));
  });

  it("refuses over StreamOutput too, before anything is streamed", async function () {
    const out = await freshOut();
    const p = policy(out, { expiresAtUnix: nowUnix() - HOUR_SECONDS, notBeforeUnix: 0 });
    const r = await rejection(daemon.stream({ target: moduleTarget(moduleId), policy: wire(signed(p, authority)) }));
    expect({ code: r.code, reason: r.reason }).to.deep.equal({ code: status.PERMISSION_DENIED, reason: "POLICY_EXPIRED" });
    expect(await ran(out)).to.equal(false);
  });

  it("SIGHUP trusts a newly added key and forgets a removed one", async function () {
    const rotated = makeKey("authority-2");
    const out = await freshOut();
    const request = { target: moduleTarget(moduleId), policy: wire(signed(policy(out), rotated)) };
    expect((await rejection(daemon.execute(request))).reason).to.equal("POLICY_UNKNOWN_KEY");

    await writePublicKeys(keysDir, [rotated]);
    await sighupAndWait(1);
    const response = await daemon.execute(request);
    expect(response.exitCode, response.stderr.toString()).to.equal(0);

    await rm(join(keysDir, "authority-2.pub"));
    await sighupAndWait(2);
    expect((await rejection(daemon.execute(request))).reason).to.equal("POLICY_UNKNOWN_KEY");
  });

  it("under --allow-unsigned, a request without a policy runs with no mounts at all", async function () {
    const dev = await startDaemon({ args: ["--allow-unsigned", "--allow-mount-root", root] });
    try {
      const response = await dev.execute({ target: sourceTarget(SCRIPT) });
      expect(response.outcome).to.equal(Outcome.OUTCOME_EXITED);
      expect(response.exitCode).to.not.equal(0);
      expect(response.stderr.toString()).to.contain("read /in/input.txt");
    } finally {
      await dev.stop();
    }
  });

  /** Sends SIGHUP and waits until the daemon has logged its n-th reload. */
  async function sighupAndWait(n: number): Promise<void> {
    daemon.process.kill("SIGHUP");
    const deadline = Date.now() + RELOAD_WAIT_MS;
    while (daemon.logs().split("trusted keys reloaded").length - 1 < n) {
      if (Date.now() > deadline) expect.fail(`no reload logged after SIGHUP:\n${daemon.logs()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
});
