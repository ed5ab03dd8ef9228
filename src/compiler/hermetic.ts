/**
 * Hermetic rustc: the source is hostile. `include_str!("/etc/passwd")`, `#[path = "/..."] mod x;`
 * and `env!("SECRET")` are evaluated by the compiler, so rustc runs under bubblewrap with a cleared
 * environment, an empty root, only the toolchain (+ SDK) read-only, its work dir read-write, no
 * network, and rlimits on memory and file size. The wall-clock timeout is the caller's (execa).
 */
import { accessSync, constants, existsSync, lstatSync, realpathSync } from "node:fs";
import path from "node:path";
import { COMPILE_MAX_FILE_BYTES, COMPILE_MEMORY_LIMIT_BYTES, COMPILE_TMPFS_BYTES } from "../limits.js";
import { loadExeca } from "./lazy-execa.js";

/** Where bwrap is looked for when not on PATH. */
const BWRAP_CANDIDATES = ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"];

/** Time allowed for the probe run that checks bwrap can create its namespaces here. */
const BWRAP_PROBE_TIMEOUT_MS = 10_000;

/** Shell used inside the sandbox only to set rlimits before exec'ing rustc (bwrap 0.8 has no --rlimit). */
const SANDBOX_SHELL = "/bin/sh";

/** The only environment rustc sees: nothing of the daemon's leaks into `env!`/`option_env!`. */
const SANDBOX_ENV: Readonly<Record<string, string>> = { PATH: "/usr/bin:/bin", LC_ALL: "C" };

/** A command ready for execa: run `file` with `args` and exactly `env` (pass `extendEnv: false`). */
export interface HermeticCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/** Inputs of {@link hermeticCommand}. Paths are host paths; they appear at the same paths inside. */
export interface HermeticOptions {
  /** Path of the bwrap binary (from {@link detectBubblewrap}). */
  bwrap: string;
  /** Path of rustc, as the daemon would run it. */
  rustc: string;
  /** `rustc --print sysroot`. */
  sysroot: string;
  /** Private temp dir holding the source and receiving the output; the only writable path. */
  workDir: string;
  /** Extra paths rustc must read, e.g. the SDK's deps dir. */
  readOnlyPaths: string[];
  /** rustc's arguments (paths in them must be inside workDir, readOnlyPaths or the sysroot). */
  args: string[];
  /** Overrides {@link COMPILE_MEMORY_LIMIT_BYTES}. */
  memoryLimitBytes?: number;
  /** Overrides {@link COMPILE_MAX_FILE_BYTES}. */
  maxFileBytes?: number;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return lstatSync(p).isFile() || lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/**
 * Finds a bubblewrap that can actually create the namespaces we ask for (it may be installed but
 * unusable, e.g. unprivileged user namespaces disabled). Returns its path, or undefined.
 */
export async function detectBubblewrap(candidates: readonly string[] = defaultCandidates()): Promise<string | undefined> {
  for (const bwrap of candidates) {
    if (!isExecutable(bwrap)) continue;
    const execa = await loadExeca();
    const probe = await execa(bwrap, ["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--", "/bin/true"], {
      reject: false,
      timeout: BWRAP_PROBE_TIMEOUT_MS,
      env: {},
      extendEnv: false,
    });
    if (probe.exitCode === 0) return bwrap;
  }
  return undefined;
}

function defaultCandidates(): string[] {
  const fromPath = (process.env["PATH"] ?? "")
    .split(":")
    .filter(Boolean)
    .map((d) => path.join(d, "bwrap"));
  return [...new Set([...fromPath, ...BWRAP_CANDIDATES])];
}

/** `--ro-bind p p` for a path and, when it is a symlink, for what it points at (so exec works inside). */
function roBindWithTarget(p: string, out: string[]): void {
  out.push("--ro-bind", p, p);
  let real: string;
  try {
    real = realpathSync(p);
  } catch {
    return;
  }
  if (real !== p) out.push("--ro-bind", real, real);
}

/**
 * The system library dirs the dynamic linker and rustc's own shared libs (librustc_driver, LLVM)
 * live in. On merged-/usr systems /lib* are symlinks and are recreated as such.
 */
function systemLibraryArgs(out: string[]): void {
  for (const dir of ["/usr/lib", "/usr/lib64", "/usr/lib32"]) {
    if (existsSync(dir)) out.push("--ro-bind", dir, dir);
  }
  for (const top of ["/lib", "/lib64", "/lib32", "/bin"]) {
    let st;
    try {
      st = lstatSync(top);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) {
      const target = realpathSync(top);
      out.push("--symlink", path.relative("/", target), top);
    } else if (top !== "/bin") {
      out.push("--ro-bind", top, top);
    }
  }
}

/** True if `child` is `parent` or inside it. */
function within(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/**
 * Builds the bwrap command line that runs rustc hermetically. Run it with
 * `execa(cmd.file, cmd.args, { env: cmd.env, extendEnv: false, timeout, cancelSignal })`.
 */
export function hermeticCommand(opts: HermeticOptions): HermeticCommand {
  const sysroot = path.resolve(opts.sysroot);
  const workDir = path.resolve(opts.workDir);
  // A rustup proxy (~/.cargo/bin/rustc) would need ~/.rustup inside; the sysroot's own binary does not.
  const sysrootRustc = path.join(sysroot, "bin", "rustc");
  const rustc = existsSync(sysrootRustc) ? sysrootRustc : path.resolve(opts.rustc);

  const args: string[] = [
    "--unshare-all", // no network, own pid/ipc/uts/user/cgroup namespaces
    "--die-with-parent",
    "--new-session", // no TIOCSTI into the daemon's terminal
    "--clearenv",
    ...Object.entries(SANDBOX_ENV).flatMap(([k, v]) => ["--setenv", k, v]),
    "--tmpfs",
    "/",
    // rustc locates its sysroot and codegen backend through /proc/self/exe
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--size",
    String(COMPILE_TMPFS_BYTES),
    "--tmpfs",
    "/tmp",
  ];
  systemLibraryArgs(args);

  // The sysroot's lib dir (std rlibs for the target, rustc's libs); on Debian it is /usr/lib, already bound.
  const sysrootLib = path.join(sysroot, "lib");
  if (!within(sysrootLib, "/usr/lib") && existsSync(sysrootLib)) args.push("--ro-bind", sysrootLib, sysrootLib);
  roBindWithTarget(rustc, args);
  // rustc links wasm with rust-lld, found next to rustc, in the sysroot's bin, or on PATH.
  for (const lld of new Set([path.join(path.dirname(rustc), "rust-lld"), path.join(sysroot, "bin", "rust-lld"), "/usr/bin/rust-lld"])) {
    if (existsSync(lld)) roBindWithTarget(lld, args);
  }
  roBindWithTarget(SANDBOX_SHELL, args);
  for (const p of opts.readOnlyPaths) args.push("--ro-bind", path.resolve(p), path.resolve(p));
  args.push("--bind", workDir, workDir, "--chdir", workDir);

  args.push("--", ...withRlimits(rustc, opts));
  return { file: opts.bwrap, args, env: { ...SANDBOX_ENV } };
}

/**
 * `sh -c 'ulimit ...; exec "$@"' name rustc args...`: sets RLIMIT_AS and RLIMIT_FSIZE, then becomes
 * rustc. The rustc args are never parsed by the shell.
 */
function withRlimits(rustc: string, opts: { args: string[]; memoryLimitBytes?: number; maxFileBytes?: number }): string[] {
  const memoryKiB = Math.floor((opts.memoryLimitBytes ?? COMPILE_MEMORY_LIMIT_BYTES) / 1024);
  // dash's `ulimit -f` counts 512-byte blocks
  const fileBlocks = Math.floor((opts.maxFileBytes ?? COMPILE_MAX_FILE_BYTES) / 512);
  const script = `ulimit -v ${memoryKiB} && ulimit -f ${fileBlocks} && exec "$@"`;
  return [SANDBOX_SHELL, "-c", script, "sandboxd-rustc", rustc, ...opts.args];
}

/**
 * The same rustc invocation without a sandbox, for `--insecure-compile`: the environment is still
 * cleared and the rlimits still apply, but the source can read any file the daemon can.
 */
export function insecureCommand(opts: {
  rustc: string;
  args: string[];
  memoryLimitBytes?: number;
  maxFileBytes?: number;
}): HermeticCommand {
  const [file, ...args] = withRlimits(path.resolve(opts.rustc), opts) as [string, ...string[]];
  return { file, args, env: { ...SANDBOX_ENV } };
}
