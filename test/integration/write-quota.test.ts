import { expect } from "chai";
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Outcome } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { moduleTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { makeKey, signed, wire, writePublicKeys } from "../unit/policy-fixtures.js";

/** Files a run may create in these tests (the daemon's default is 10,000). */
const MAX_CREATED_ENTRIES = 200;

/** A guest that does what its stdin says in its writable mount /w and prints each step's result. */
const QUOTA_GUEST = `
use std::io::{Read, Write};
fn report<T>(what: &str, r: std::io::Result<T>) {
    match r { Ok(_) => println!("{} ok", what), Err(e) => println!("{} err {}", what, e.raw_os_error().unwrap_or(-1)) }
}
fn main() {
    let mut mode = String::new();
    std::io::stdin().read_to_string(&mut mode).unwrap();
    match mode.trim() {
        "write" => {
            let mut f = std::fs::File::create("/w/data").unwrap();
            let block = vec![b'q'; 60_000];
            report("first", f.write_all(&block));
            report("second", f.write_all(&block));
        }
        "grow" => {
            let f = std::fs::File::create("/w/sparse").unwrap();
            report("set_len", f.set_len(10_000_000));
        }
        "create" => {
            let mut failed_at = 0;
            for i in 0..${MAX_CREATED_ENTRIES + 5} {
                if std::fs::File::create(format!("/w/f{}", i)).is_err() { failed_at = i; break; }
            }
            println!("create failed at {}", failed_at);
        }
        _ => {}
    }
}
`;

/** Per-run quotas on writable mounts: bytes added and entries created. */
describe("write quotas on writable mounts", function () {
  this.timeout(240_000);
  let daemon: TestDaemon;
  let root: string;
  let guestId: string;
  const authority = makeKey("quota");

  before(async function () {
    root = await mkdtemp(path.join(tmpdir(), "sandboxd-quota-"));
    await mkdir(path.join(root, "keys"));
    await writePublicKeys(path.join(root, "keys"), [authority]);
    daemon = await startDaemon({
      args: [
        "--trusted-keys",
        path.join(root, "keys"),
        "--allow-mount-root",
        root,
        "--max-write-bytes",
        String(1 << 30),
        "--max-created-entries",
        String(MAX_CREATED_ENTRIES),
      ],
    });
    const compiled = await daemon.compile({ input: { $case: "source", value: QUOTA_GUEST } });
    expect(compiled.ok, JSON.stringify(compiled.diagnostics)).to.equal(true);
    guestId = compiled.moduleId;
  });
  after(async function () {
    await daemon?.stop();
    await rm(root, { recursive: true, force: true });
  });

  async function run(
    mode: string,
    maxWriteBytes: number,
  ): Promise<{ stdout: string; dir: string; denials: { operation: string; reason: string }[] }> {
    const dir = await mkdtemp(path.join(root, "w-"));
    const policy = wire(
      signed(
        {
          expiresAtUnix: Math.floor(Date.now() / 1000) + 3600,
          maxWriteBytes,
          mounts: [{ hostPath: dir, guestPath: "/w", writable: true }],
        },
        authority,
      ),
    );
    const r = await daemon.execute({ target: moduleTarget(guestId), policy, stdin: Buffer.from(mode) });
    expect(r.outcome, r.message + r.stderr.toString()).to.equal(Outcome.OUTCOME_EXITED);
    return { stdout: r.stdout.toString(), dir, denials: r.denials };
  }

  it("a write past max_write_bytes fails with EDQUOT and a denial, and nothing of it lands", async function () {
    const { stdout, dir, denials } = await run("write", 100_000);
    expect(stdout).to.equal("first ok\nsecond err 19\n");
    expect((await stat(path.join(dir, "data"))).size).to.equal(60_000);
    expect(denials.map((d) => d.operation)).to.deep.equal(["fd_write"]);
    expect(denials[0]?.reason).to.contain("write quota of 100000 bytes");
  });

  it("growing a file with set_len counts against the quota", async function () {
    const { stdout, dir, denials } = await run("grow", 1_000_000);
    expect(stdout).to.equal("set_len err 19\n");
    expect((await stat(path.join(dir, "sparse"))).size).to.equal(0);
    expect(denials[0]?.operation).to.equal("fd_filestat_set_size");
  });

  it(`a run creates at most ${MAX_CREATED_ENTRIES} files`, async function () {
    const { stdout, dir, denials } = await run("create", 0);
    expect(stdout).to.equal(`create failed at ${MAX_CREATED_ENTRIES}\n`);
    expect(await readdir(dir)).to.have.length(MAX_CREATED_ENTRIES);
    expect(denials[0]?.operation).to.equal("path_open");
    expect(denials[0]?.reason).to.contain(`at most ${MAX_CREATED_ENTRIES}`);
  });

  it("within the quota, writes land as written", async function () {
    const { stdout, dir } = await run("write", 200_000);
    expect(stdout).to.equal("first ok\nsecond ok\n");
    expect((await readFile(path.join(dir, "data"))).length).to.equal(120_000);
  });
});
