import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Outcome, type Denial, type Policy } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { MAX_DENIALS, MAX_STDIN_BYTES } from "../../src/limits.js";
import { moduleTarget, rejection, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

/**
 * Tries one forbidden write into the read-only mount and one read outside
 * every mount (refused inside the guest: wasi-libc finds no preopen for it, so
 * it never reaches the host and is no denial), then (with argument "flood") many more forbidden writes, and
 * still exits 0: denials are reported, not fatal.
 */
const SCRIPT = `
use std::fs;
fn main() {
    let flood = std::env::args().nth(1).as_deref() == Some("flood");
    let write_refused = fs::write("/data/new.txt", "x").is_err();
    let outside_refused = fs::read_to_string("/etc/passwd").is_err();
    if flood {
        for i in 0..200 { let _ = fs::write(format!("/data/flood-{}.txt", i), "x"); }
    }
    println!("{{\\"write_refused\\":{},\\"outside_refused\\":{}}}", write_refused, outside_refused);
}
`;

describe("denials reach the client (Execute result and StreamOutput events)", function () {
  let tmp: { path: string; remove: () => Promise<void> };
  let data: string;
  let key: TestKey;
  let daemon: TestDaemon;
  let moduleId: string;

  before(async function () {
    tmp = await tempDir("denials");
    const keys = join(tmp.path, "keys");
    data = join(tmp.path, "data");
    await mkdir(keys);
    await mkdir(data);
    await writeFile(join(data, "existing.txt"), "read me");
    key = makeKey("authority");
    await writePublicKeys(keys, [key]);
    daemon = await startDaemon({ args: ["--trusted-keys", keys, "--allow-mount-root", data] });
    const compiled = await daemon.compile({ input: { $case: "source", value: SCRIPT } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    moduleId = compiled.moduleId;
  });
  after(async function () {
    await daemon?.stop();
    await tmp?.remove();
  });

  const policy = (): Partial<Policy> => ({
    policyId: "denials",
    expiresAtUnix: Math.floor(Date.now() / 1000) + 600,
    mounts: [{ hostPath: data, guestPath: "/data", writable: false }],
  });

  it("Execute lists each refused operation with the guest path and a reason", async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), policy: wire(signed(policy(), key)) });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(JSON.parse(r.stdout.toString())).to.deep.equal({ write_refused: true, outside_refused: true });
    const write = r.denials.find((d) => d.path.includes("new.txt"));
    expect(write, JSON.stringify(r.denials)).to.not.equal(undefined);
    expect(write!.operation).to.equal("path_open");
    expect(write!.reason).to.match(/read-only/i);
    expect(r.denials, "the refused write, and nothing else").to.have.length(1);
    expect(existsSync(join(data, "new.txt"))).to.equal(false);
  });

  it("StreamOutput sends each denial as an event as it happens, before `finished`", async function () {
    const events = await daemon.stream({ target: moduleTarget(moduleId), policy: wire(signed(policy(), key)) });
    const kinds = events.map((e) => e.event.event?.$case);
    const denials = events.filter((e) => e.event.event?.$case === "denial").map((e) => (e.event.event as { value: Denial }).value);
    expect(denials.some((d) => d.path.includes("new.txt"))).to.equal(true);
    expect(kinds.indexOf("denial")).to.be.lessThan(kinds.indexOf("finished"));
    expect(kinds[0]).to.equal("started");
  });

  it(`keeps at most ${MAX_DENIALS} denials and says how many more there were`, async function () {
    const r = await daemon.execute({ target: moduleTarget(moduleId), args: ["flood"], policy: wire(signed(policy(), key)) });
    expect(r.outcome).to.equal(Outcome.OUTCOME_EXITED);
    // 1 + 200 refused writes: MAX_DENIALS kept, then one summary entry.
    expect(r.denials).to.have.length(MAX_DENIALS + 1);
    expect(r.denials[MAX_DENIALS]!.reason).to.equal(`${201 - MAX_DENIALS} more denials were not recorded`);
  });

  it("refuses stdin over the limit with INVALID_ARGUMENT before running anything", async function () {
    const r = await rejection(
      daemon.execute({ target: moduleTarget(moduleId), stdin: Buffer.alloc(MAX_STDIN_BYTES + 1), policy: wire(signed(policy(), key)) }),
    );
    expect(r).to.include({ code: status.INVALID_ARGUMENT, reason: "STDIN_TOO_LARGE" });
  });
});
