import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { parseRustcDiagnostics } from "../../src/compiler/diagnostics.js";
import { loadSdk } from "../../src/compiler/sdk.js";
import { detectBubblewrap, hermeticCommand, insecureCommand, type HermeticCommand } from "../../src/compiler/hermetic.js";

// Real bubblewrap and Debian's rustc 1.63 (scripts/setup installs both).
const RUSTC = "/usr/bin/rustc";
const TARGET = "wasm32-wasi";
const SECRET_ENV = "SANDBOXD_HERMETIC_TEST_SECRET";

interface Outcome {
  exitCode: number | undefined;
  stderr: string;
  wasm: Buffer | undefined;
}

describe("hermetic rustc (bubblewrap)", function () {
  let bwrap: string;
  let secretDir: string;
  let secretFile: string;
  let secretModFile: string;
  let secret: string;
  const workDirs: string[] = [];

  before(async function () {
    const found = await detectBubblewrap();
    if (!found) throw new Error("bubblewrap is not usable here (apt-get install bubblewrap)");
    bwrap = found;
    secret = `TOPSECRET-${randomBytes(12).toString("hex")}`;
    // outside any work dir, readable by the daemon: exactly what a script must not reach
    secretDir = await mkdtemp(path.join(tmpdir(), "hermetic-secret-"));
    secretFile = path.join(secretDir, "secret.txt");
    secretModFile = path.join(secretDir, "secret_mod.rs");
    await writeFile(secretFile, secret);
    await writeFile(secretModFile, `pub const S: &str = "${secret}";\n`);
    process.env[SECRET_ENV] = secret;
  });

  after(async function () {
    delete process.env[SECRET_ENV];
    await rm(secretDir, { recursive: true, force: true });
    for (const d of workDirs) await rm(d, { recursive: true, force: true });
  });

  async function compileWith(make: (workDir: string, args: string[]) => HermeticCommand, source: string): Promise<Outcome> {
    const workDir = await mkdtemp(path.join(tmpdir(), "hermetic-work-"));
    workDirs.push(workDir);
    await writeFile(path.join(workDir, "main.rs"), source);
    const args = ["--edition", "2021", "--crate-type", "bin", "--error-format=json", "--target", TARGET, "-o", "main.wasm", "main.rs"];
    const cmd = make(workDir, args);
    const r = await execa(cmd.file, cmd.args, { env: cmd.env, extendEnv: false, reject: false, cwd: workDir, timeout: 120_000 });
    const wasm = await readFile(path.join(workDir, "main.wasm")).catch(() => undefined);
    return { exitCode: r.exitCode, stderr: `${r.stdout}${r.stderr}`, wasm };
  }

  const hermetic = (source: string, memoryLimitBytes?: number): Promise<Outcome> =>
    compileWith(
      (workDir, args) =>
        hermeticCommand({
          bwrap,
          rustc: RUSTC,
          sysroot: "/usr",
          workDir,
          readOnlyPaths: [],
          args,
          ...(memoryLimitBytes ? { memoryLimitBytes } : {}),
        }),
      source,
    );

  function expectNoLeak(o: Outcome): void {
    expect(o.stderr).to.not.contain(secret);
    if (o.wasm) expect(o.wasm.includes(Buffer.from(secret))).to.equal(false);
  }

  function expectCompileError(o: Outcome, pattern: RegExp): void {
    expect(o.exitCode).to.not.equal(0);
    const ds = parseRustcDiagnostics(o.stderr, { userFile: "main.rs", lineOffset: 0 });
    expect(
      ds.some((d) => d.severity === "error" && pattern.test(d.message)),
      o.stderr,
    ).to.equal(true);
  }

  it("compiles an ordinary program", async function () {
    const o = await hermetic(`fn main() { println!("hi"); }`);
    expect(o.exitCode, o.stderr).to.equal(0);
    expect(o.wasm?.subarray(0, 4).toString("hex")).to.equal("0061736d");
  });

  it("control: without the sandbox, include_str! of the secret file embeds it (so the checks below can fail)", async function () {
    const o = await compileWith(
      (_w, args) => insecureCommand({ rustc: RUSTC, args }),
      `fn main() { println!("{}", include_str!("${secretFile}")); }`,
    );
    expect(o.exitCode, o.stderr).to.equal(0);
    expect(o.wasm?.includes(Buffer.from(secret))).to.equal(true);
  });

  it("include_str! of a host file outside the work dir fails with a diagnostic", async function () {
    const o = await hermetic(`fn main() { println!("{}", include_str!("${secretFile}")); }`);
    expectCompileError(o, /couldn't read/);
    expectNoLeak(o);
  });

  it('include_str!("/etc/passwd") fails: the sandbox has no /etc', async function () {
    const o = await hermetic(`fn main() { println!("{}", include_str!("/etc/passwd")); }`);
    expectCompileError(o, /couldn't read/);
    expect(o.stderr).to.not.match(/root:x:0:0/);
  });

  it("include_bytes! of a host file fails", async function () {
    const o = await hermetic(`fn main() { println!("{:?}", include_bytes!("${secretFile}")); }`);
    expectCompileError(o, /couldn't read/);
    expectNoLeak(o);
  });

  it("#[path = ...] mod of a host file fails", async function () {
    const o = await hermetic(`#[path = "${secretModFile}"] mod x;\nfn main() { println!("{}", x::S); }`);
    expectCompileError(o, /file not found for module|couldn't read/);
    expectNoLeak(o);
  });

  it('#[path = "/etc/hostname"] mod fails', async function () {
    const o = await hermetic(`#[path = "/etc/hostname"] mod x;\nfn main() {}`);
    expectCompileError(o, /file not found for module|couldn't read/);
  });

  it("env! of the daemon's secret variable fails: rustc's environment is cleared", async function () {
    expect(process.env[SECRET_ENV]).to.equal(secret);
    const o = await hermetic(`fn main() { println!("{}", env!("${SECRET_ENV}")); }`);
    expectCompileError(o, /environment variable .* not defined/);
    expectNoLeak(o);
  });

  it("control: rustc run with the daemon's environment embeds env!(SECRET) (so the check above can fail)", async function () {
    const o = await compileWith(
      (_w, args) => ({ file: RUSTC, args, env: { ...process.env } as Record<string, string> }),
      `fn main() { println!("{}", env!("${SECRET_ENV}")); }`,
    );
    expect(o.exitCode, o.stderr).to.equal(0);
    expect(o.wasm?.includes(Buffer.from(secret))).to.equal(true);
  });

  it("option_env! of the daemon's secret variable compiles to None", async function () {
    const o = await hermetic(`fn main() { println!("{:?}", option_env!("${SECRET_ENV}")); }`);
    expect(o.exitCode, o.stderr).to.equal(0);
    expectNoLeak(o);
  });

  it("links a script against the SDK (serde_derive proc-macro included) under the default caps", async function () {
    const sdk = await loadSdk(path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../../build/sdk"));
    if (!sdk) throw new Error("no SDK: run scripts/build-sdk");
    const source = `use sandbox_sdk::prelude::*;\n#[derive(Serialize, Deserialize)] struct P { x: u32 }\nfn main() { run(|p: P| Ok(P { x: p.x + 1 })) }`;
    const o = await compileWith(
      (workDir, args) =>
        hermeticCommand({
          bwrap,
          rustc: RUSTC,
          sysroot: "/usr",
          workDir,
          readOnlyPaths: sdk.readOnlyPaths,
          args: [...args, ...sdk.rustcArgs],
        }),
      source,
    );
    expect(o.exitCode, o.stderr).to.equal(0);
    expect(o.wasm).to.not.equal(undefined);
  });

  it("a rustc over its memory cap fails instead of eating the host", async function () {
    const o = await hermetic(`fn main() { println!("hi"); }`, 64 * 1024 * 1024);
    expect(o.exitCode).to.not.equal(0);
    expect(o.wasm).to.equal(undefined);
  });

  it("--insecure-compile's command still clears the environment and caps memory", async function () {
    const capped = await compileWith(
      (_w, args) => insecureCommand({ rustc: RUSTC, args, memoryLimitBytes: 64 * 1024 * 1024 }),
      `fn main() {}`,
    );
    expect(capped.exitCode).to.not.equal(0);
    const cmd = insecureCommand({ rustc: RUSTC, args: ["x.rs"] });
    expect(Object.keys(cmd.env).sort()).to.deep.equal(["LC_ALL", "PATH"]);
    expect(cmd.args.slice(-2)).to.deep.equal([RUSTC, "x.rs"]);
  });

  it("passes no environment of the daemon and asks for every namespace", function () {
    const cmd = hermeticCommand({ bwrap, rustc: RUSTC, sysroot: "/usr", workDir: "/tmp/w", readOnlyPaths: ["/opt/sdk"], args: ["x.rs"] });
    expect(cmd.env).to.not.have.property(SECRET_ENV);
    expect(Object.keys(cmd.env).sort()).to.deep.equal(["LC_ALL", "PATH"]);
    expect(cmd.args).to.include.members(["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]);
    const bindsOf = (flag: string): string[] => cmd.args.flatMap((a, i) => (a === flag ? [cmd.args[i + 1] ?? ""] : []));
    expect(bindsOf("--bind")).to.deep.equal(["/tmp/w"]);
    expect(bindsOf("--ro-bind")).to.include("/opt/sdk");
    expect(bindsOf("--ro-bind").some((p) => p === "/etc" || p.startsWith("/home") || p.startsWith("/root"))).to.equal(false);
  });
});
