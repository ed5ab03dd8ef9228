import { expect } from "chai";
import { execa } from "execa";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseRustcDiagnostics } from "../../src/compiler/diagnostics.js";
import { DEBIAN_RUSTC, LINK_PROBE_SOURCE, probeToolchain, toolchainProblemIn } from "../../src/compiler/toolchain.js";

/** Diagnostics of a real Debian rustc build of `source` for wasm32-wasi, with `extra` flags. */
async function rustcDiagnostics(dir: string, source: string, extra: string[] = []) {
  await writeFile(path.join(dir, "main.rs"), source);
  const r = await execa(DEBIAN_RUSTC, ["--error-format=json", "--target", "wasm32-wasi", ...extra, "-o", "main.wasm", "main.rs"], {
    cwd: dir,
    reject: false,
  });
  expect(r.exitCode, "the build was meant to fail").to.not.equal(0);
  return parseRustcDiagnostics(r.stderr, { userFile: "main.rs", lineOffset: 0 });
}

describe("toolchain: what a failed build says is missing", function () {
  this.timeout(60_000);
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "sandboxd-toolchain-"));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("a linker rustc cannot run is lld-14's absence", async () => {
    const problem = toolchainProblemIn(
      await rustcDiagnostics(dir, LINK_PROBE_SOURCE, ["-C", "linker=/nonexistent/rust-lld"]),
      "wasm32-wasi",
    );
    expect(problem?.packages).to.deep.equal(["lld-14"]);
    expect(problem?.message).to.contain("apt-get install lld-14");
  });

  it("a sysroot without the target's std is libstd-rust-dev-wasm32's absence", async () => {
    await mkdir(path.join(dir, "empty-sysroot"));
    const problem = toolchainProblemIn(
      await rustcDiagnostics(dir, LINK_PROBE_SOURCE, ["--sysroot", path.join(dir, "empty-sysroot")]),
      "wasm32-wasi",
    );
    expect(problem?.packages).to.deep.equal(["libstd-rust-dev-wasm32"]);
  });

  it("a script's own missing crate or failed link stays the script's diagnostic", async () => {
    expect(toolchainProblemIn(await rustcDiagnostics(dir, "extern crate nope;\nfn main() {}\n"), "wasm32-wasi")).to.equal(undefined);
    const link = '#[link(name = "nope")]\nextern "C" { fn f(); }\nfn main() { unsafe { f() } }\n';
    expect(toolchainProblemIn(await rustcDiagnostics(dir, link), "wasm32-wasi")).to.equal(undefined);
  });
});

describe("toolchain: detection says which package is missing", function () {
  this.timeout(60_000);

  it("no rustc at all: rustc, libstd-rust-dev-wasm32 and lld-14", async () => {
    const found = await probeToolchain("/nonexistent/rustc");
    expect(found.toolchain).to.equal(undefined);
    expect(found.problem?.packages).to.deep.equal(["rustc", "libstd-rust-dev-wasm32", "lld-14"]);
    expect(found.problem?.message).to.contain("apt-get install rustc libstd-rust-dev-wasm32 lld-14");
  });

  it("a rustc whose sysroot has no wasm std: libstd-rust-dev-wasm32", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-toolchain-"));
    try {
      const rustc = path.join(dir, "rustc");
      await writeFile(rustc, `#!/bin/sh\nif [ "$1" = "--print" ]; then echo "${dir}"; else exec ${DEBIAN_RUSTC} "$@"; fi\n`);
      await chmod(rustc, 0o755);
      const found = await probeToolchain(rustc);
      expect(found.toolchain).to.equal(undefined);
      expect(found.problem?.packages).to.deep.equal(["libstd-rust-dev-wasm32"]);
      expect(found.problem?.message).to.contain(rustc);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
