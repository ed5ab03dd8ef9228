/**
 * A real rustc with one part of its wasm toolchain missing, built in a temp dir
 * so a test can start a real daemon on it without uninstalling packages. It is
 * a fake sysroot whose `bin/rustc` (the binary the daemon runs, hermetically
 * too: the sysroot's lib dir is mounted into the sandbox) is a script running a
 * copy of Debian's rustc with either an unreachable linker or an empty wasm std.
 */
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DEBIAN_RUSTC } from "../../src/compiler/toolchain.js";

/** Debian's wasm std, as its rustc finds it. */
const DEBIAN_WASM_STD = "/usr/lib/rustlib/wasm32-wasi/lib";

/** What is broken: the linker rustc runs, or the target's standard library. */
export type BrokenPart = "linker" | "std";

/** A broken toolchain: pass `rustc` as `--rustc`; `remove` deletes it. */
export interface BrokenToolchain {
  readonly rustc: string;
  remove(): Promise<void>;
}

/** Builds a fake sysroot around a copy of Debian's rustc with `part` missing. */
export async function brokenToolchain(part: BrokenPart): Promise<BrokenToolchain> {
  const sysroot = await mkdtemp(path.join(tmpdir(), `sandboxd-broken-${part}-`));
  const lib = path.join(sysroot, "lib");
  const std = path.join(lib, "rustlib", "wasm32-wasi", "lib");
  await mkdir(path.dirname(std), { recursive: true });
  await mkdir(path.join(sysroot, "bin"));
  // A copy, not a link: inside the compile sandbox only the sysroot's lib dir is mounted, not /usr/bin.
  const real = path.join(lib, "rustc-real");
  await copyFile(DEBIAN_RUSTC, real);
  await chmod(real, 0o755);
  if (part === "linker") await symlink(DEBIAN_WASM_STD, std);
  else await mkdir(std); // the target's std dir exists, but holds nothing
  // With a missing linker the real sysroot serves the std; with a missing std, ours (empty) does.
  const realSysroot = part === "linker" ? "/usr" : sysroot;
  const linkerFlags = part === "linker" ? "-C linker=/nonexistent/rust-lld" : "";
  const rustc = path.join(sysroot, "bin", "rustc");
  await writeFile(
    rustc,
    `#!/bin/sh
# rustc with a broken ${part}; see test/helpers/broken-toolchain.ts
if [ "$1" = "--print" ] && [ "$2" = "sysroot" ]; then echo "${sysroot}"; exit 0; fi
case " $* " in
  *" --target "*) exec "${real}" --sysroot "${realSysroot}" "$@" ${linkerFlags} ;;
  *) exec "${real}" --sysroot "${realSysroot}" "$@" ;;
esac
`,
  );
  await chmod(rustc, 0o755);
  return { rustc, remove: () => rm(sysroot, { recursive: true, force: true }) };
}
