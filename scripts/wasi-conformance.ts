/**
 * Runs the official WASI test suite (github WebAssembly/wasi-testsuite, branch prod/testsuite-base,
 * folders tests/* /testsuite/wasm32-wasip1) through a real sandboxd: the compiled daemon is started on
 * a throwaway unix socket, every test module is registered with Compile{wasm} and run with Execute
 * under a freshly signed policy that mounts a private copy of the test's `root` at guest "/". So the
 * figure covers the whole daemon path (policy verification, mount resolution, worker pool, our
 * preview1 host, result translation), not only the host.
 *
 *   scripts/wasi-conformance [--direct] [SUITE_DIR]      (or WASI_TESTSUITE_DIR=...)
 *
 * --direct drives our preview1 host in-process instead (one Worker per test), to tell a host bug from
 * a daemon bug. The suite itself is never written to: each test gets its own copy of its directory.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import type { SignedPolicy } from "../src/gen/grpc/sandbox/v1/sandbox.js";
import { Outcome, outcomeToJSON } from "../src/gen/pb/sandbox/v1/sandbox.js";
import type { SandboxClient } from "../src/grpc/client.js";
import { signPolicy } from "../src/policy/signed-policy-file.js";
import { WasiHost } from "../src/runtime/wasi/host.js";
import { capMemory } from "../src/runtime/wasm/memory-cap.js";
import { validateCommandModule } from "../src/runtime/wasm/validate.js";

/** The compiled daemon entry point (this file runs from dist/scripts/). */
const SANDBOXD_BIN = fileURLToPath(new URL("../src/cli/sandboxd.js", import.meta.url));
/** Wall-clock budget of one conformance test before it counts as hung. */
const TEST_TIMEOUT_MS = 20_000;
/** Extra time the gRPC deadline allows beyond the guest's own timeout (queueing, translation). */
const RPC_DEADLINE_SLACK_MS = 10_000;
/** How long the daemon may take to print its listening line. */
const DAEMON_START_TIMEOUT_MS = 20_000;
/** Memory each test may use in --direct mode (the daemon path uses the daemon's default). */
const DIRECT_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024;
/** Output kept per stream in --direct mode. */
const DIRECT_MAX_OUTPUT_BYTES = 1024 * 1024;
/** Lifetime of the signed policies; a full run takes well under a minute. */
const POLICY_LIFETIME_SECONDS = 3600;
/** Daemon log kept for the failure message (the tail is what explains a crash). */
const MAX_DAEMON_LOG_CHARS = 64 * 1024;
/** The ephemeral signing key's id (file <id>.pub in the temp --trusted-keys dir). */
const KEY_ID = "wasi-conformance";
/** Daemon warning/error log lines shown after a run with failures. */
const DAEMON_LOG_LINES_SHOWN = 20;
/** Guest stderr lines shown under a failure. */
const STDERR_LINES_SHOWN = 6;

/** One test as the suite's JSON spec describes it (legacy or operation-based form, normalized). */
interface TestCase {
  readonly args: string[];
  readonly env: ReadonlyMap<string, string>;
  /** Directory, relative to the spec, preopened as the guest's "/". */
  readonly root: string | undefined;
  readonly stdin: string;
  /** Expected streams; undefined = not checked. */
  readonly stdout: string | undefined;
  readonly stderr: string | undefined;
  readonly exitCode: number;
}

/** What one run produced, whichever way it ran. */
interface RunReply {
  /** "exited" or why it did not (trap, timeout, refused call...). */
  readonly outcome: string;
  readonly exitCode: number;
  readonly message: string;
  readonly stdout: string;
  readonly stderr: string;
}

/** Work handed to a --direct Worker. */
interface DirectJob {
  readonly wasmPath: string;
  readonly test: TestCase;
  /** Host directory mounted at "/" (a private copy), if the test has a root. */
  readonly rootCopy: string | undefined;
}

/** Runs one test: registers/loads the module, runs it with `rootCopy` as "/". */
type Runner = (wasmPath: string, test: TestCase, rootCopy: string | undefined) => Promise<RunReply>;

// ---------------------------------------------------------------------------------------------
// The suite

function findTests(suite: string): string[] {
  const testsDir = join(suite, "tests");
  const found: string[] = [];
  for (const lang of readdirSync(testsDir).sort()) {
    const dir = join(testsDir, lang, "testsuite", "wasm32-wasip1");
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith(".wasm")) found.push(join(dir, f));
  }
  return found;
}

function asStringMap(value: unknown): Map<string, string> {
  if (typeof value !== "object" || value === null) return new Map();
  return new Map(Object.entries(value).map(([k, v]) => [k, String(v)]));
}

/** Normalizes a spec (doc/specification.md of the suite); a string says why we cannot run it. */
function parseSpec(raw: Record<string, unknown>): TestCase | string {
  if (!("operations" in raw) && !("proposals" in raw)) {
    // Legacy form: stdout/stderr are checked only when given, as the reference runner does.
    return {
      args: Array.isArray(raw["args"]) ? raw["args"].map(String) : [],
      env: asStringMap(raw["env"]),
      root: typeof raw["root"] === "string" ? raw["root"] : undefined,
      stdin: "",
      stdout: typeof raw["stdout"] === "string" ? raw["stdout"] : undefined,
      stderr: typeof raw["stderr"] === "string" ? raw["stderr"] : undefined,
      exitCode: typeof raw["exit_code"] === "number" ? raw["exit_code"] : 0,
    };
  }
  const proposals = Array.isArray(raw["proposals"]) ? raw["proposals"] : [];
  if (proposals.length > 0) return `needs proposals ${JSON.stringify(proposals)}`;
  const ops = Array.isArray(raw["operations"]) ? (raw["operations"] as Record<string, unknown>[]) : [{ type: "run" }, { type: "wait" }];
  let run: Record<string, unknown> | undefined;
  let stdin = "";
  let stdout: string | undefined;
  let stderr: string | undefined;
  let exitCode = 0;
  for (const op of ops) {
    const payload = typeof op["payload"] === "string" ? op["payload"] : "";
    switch (op["type"]) {
      case "run":
        run = op;
        break;
      // stdin is handed over whole before the guest starts, so writes simply concatenate.
      case "write":
        stdin += payload;
        break;
      case "read":
        if ((op["id"] ?? "stdout") === "stderr") stderr = (stderr ?? "") + payload;
        else stdout = (stdout ?? "") + payload;
        break;
      case "wait":
        exitCode = typeof op["exit_code"] === "number" ? op["exit_code"] : 0;
        break;
      default:
        return `operation "${String(op["type"])}" is not supported by a preview1 command runner`;
    }
  }
  return {
    args: Array.isArray(run?.["args"]) ? run["args"].map(String) : [],
    env: asStringMap(run?.["env"]),
    root: typeof run?.["root"] === "string" ? run["root"] : undefined,
    stdin,
    stdout,
    stderr,
    exitCode,
  };
}

function loadTest(wasmPath: string): TestCase | string {
  const specPath = wasmPath.replace(/\.wasm$/, ".json");
  if (!existsSync(specPath)) return parseSpec({});
  return parseSpec(JSON.parse(readFileSync(specPath, "utf8")) as Record<string, unknown>);
}

/**
 * Copies the test's root to a fresh directory under `mountRoot`, without the suite's `*.cleanup`
 * leftovers (the spec says to remove them first: a test that finds its scratch file fails with EEXIST).
 */
async function copyRoot(wasmPath: string, root: string, mountRoot: string, index: number): Promise<string> {
  const copy = join(mountRoot, `${index}-${basename(wasmPath, ".wasm")}`);
  await cp(join(dirname(wasmPath), root), copy, { recursive: true, verbatimSymlinks: true, errorOnExist: true });
  for (const entry of await readdir(copy)) if (entry.endsWith(".cleanup")) await rm(join(copy, entry), { recursive: true, force: true });
  return copy;
}

function judge(test: TestCase, reply: RunReply): string | undefined {
  if (reply.outcome !== "exited") return `${reply.outcome}: ${reply.message}`;
  if (reply.exitCode !== test.exitCode) return `exit code ${reply.exitCode}, expected ${test.exitCode}`;
  if (test.stdout !== undefined && reply.stdout !== test.stdout)
    return `stdout ${JSON.stringify(reply.stdout)}, expected ${JSON.stringify(test.stdout)}`;
  if (test.stderr !== undefined && reply.stderr !== test.stderr)
    return `stderr ${JSON.stringify(reply.stderr)}, expected ${JSON.stringify(test.stderr)}`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Through the daemon

/** A sandboxd child process and a client connected to it. */
interface Daemon {
  readonly client: SandboxClient;
  logs(): string;
  stop(): Promise<void>;
}

async function startDaemon(work: string, keysDir: string, mountRoot: string): Promise<Daemon> {
  const socket = join(work, "sandboxd.sock");
  const args = [
    SANDBOXD_BIN,
    "--listen",
    `unix://${socket}`,
    "--cache-dir",
    join(work, "cache"),
    "--trusted-keys",
    keysDir,
    "--allow-mount-root",
    mountRoot,
  ];
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-MAX_DAEMON_LOG_CHARS);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`sandboxd did not start in ${DAEMON_START_TIMEOUT_MS} ms:\n${log}`)),
        DAEMON_START_TIMEOUT_MS,
      );
      child.stderr?.on("data", () => {
        if (log.includes("sandboxd listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`sandboxd exited with ${String(child.exitCode)} before listening:\n${log}`));
      });
    });
  } catch (e: unknown) {
    child.kill("SIGKILL");
    await exited;
    throw e;
  }
  // Loaded here, not at the top: the --direct Workers import this file and need no gRPC.
  const { connect } = await import("../src/grpc/client.js");
  const client = connect(`unix://${socket}`);
  return {
    client,
    logs: () => log,
    stop: async () => {
      client.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

function daemonRunner(client: SandboxClient, sign: (moduleId: string, rootCopy: string | undefined) => SignedPolicy): Runner {
  return async (wasmPath, test, rootCopy) => {
    const failed = (message: string): RunReply => ({ outcome: "refused", exitCode: -1, message, stdout: "", stderr: "" });
    try {
      const compiled = await client.compile({ input: { $case: "wasm", value: await readFile(wasmPath) } });
      if (!compiled.ok) return failed("Compile{wasm} answered ok=false");
      const result = await client.execute(
        {
          target: { $case: "moduleId", value: compiled.moduleId },
          args: test.args,
          env: new Map(test.env),
          stdin: Buffer.from(test.stdin),
          policy: sign(compiled.moduleId, rootCopy),
        },
        { deadline: Date.now() + TEST_TIMEOUT_MS + RPC_DEADLINE_SLACK_MS },
      );
      const exited = result.outcome === Outcome.OUTCOME_EXITED;
      return {
        outcome: exited ? "exited" : outcomeToJSON(result.outcome),
        exitCode: result.exitCode ?? -1,
        message: result.message + (result.denials.length > 0 ? ` denials: ${JSON.stringify(result.denials)}` : ""),
        stdout: result.stdout.toString("utf8"),
        stderr: result.stderr.toString("utf8"),
      };
    } catch (e: unknown) {
      return failed(`gRPC call failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
}

/** Signs, per run, a policy bound to the module that mounts the test's private copy writable at "/". */
function policySigner(): { publicKeyPem: string; sign: (moduleId: string, rootCopy: string | undefined) => SignedPolicy } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    sign: (moduleId, rootCopy) => {
      const signed = signPolicy(
        {
          policyId: "wasi-conformance",
          notBeforeUnix: 0,
          expiresAtUnix: Math.floor(Date.now() / 1000) + POLICY_LIFETIME_SECONDS,
          moduleId,
          mounts: rootCopy === undefined ? [] : [{ hostPath: rootCopy, guestPath: "/", writable: true }],
          memoryLimitBytes: 0,
          timeoutMs: TEST_TIMEOUT_MS,
          maxOutputBytes: 0,
          fuelLimit: 0,
          maxWriteBytes: 0,
          network: false,
          allowedHosts: [],
          maxHttpRequests: 0,
          maxHttpResponseBytes: 0,
          httpTimeoutMs: 0,
        },
        privateKey,
        KEY_ID,
      );
      return { policy: Buffer.from(signed.policy), keyId: signed.keyId, signature: Buffer.from(signed.signature) };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// --direct: our host in a Worker, no daemon

function runDirectInThisThread(job: DirectJob): RunReply {
  const invalid = (message: string): RunReply => ({ outcome: "invalid", exitCode: -1, message, stdout: "", stderr: "" });
  const capped = capMemory(readFileSync(job.wasmPath), DIRECT_MEMORY_LIMIT_BYTES);
  if (!capped.ok) return invalid(capped.error);
  const module = new WebAssembly.Module(capped.wasm);
  const problems = validateCommandModule(module, capped.wasm);
  if (problems.length > 0) return invalid(problems.join("; "));
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const host = new WasiHost({
    args: [basename(job.wasmPath), ...job.test.args],
    env: job.test.env,
    stdin: new Uint8Array(Buffer.from(job.test.stdin)),
    mounts: job.rootCopy !== undefined ? [{ hostPath: job.rootCopy, guestPath: "/", writable: true }] : [],
    memoryLimitBytes: DIRECT_MEMORY_LIMIT_BYTES,
    maxOutputBytes: DIRECT_MAX_OUTPUT_BYTES,
    onStdout: (b) => out.push(Buffer.from(b)),
    onStderr: (b) => err.push(Buffer.from(b)),
    onDenial: () => undefined,
  });
  const result = host.run(module);
  return {
    outcome: result.outcome,
    exitCode: result.outcome === "exited" ? result.exitCode : -1,
    message: result.outcome === "exited" ? "" : result.message,
    stdout: Buffer.concat(out).toString("utf8"),
    stderr: Buffer.concat(err).toString("utf8"),
  };
}

const directRunner: Runner = (wasmPath, test, rootCopy) =>
  new Promise((resolve) => {
    const job: DirectJob = { wasmPath, test, rootCopy };
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job });
    const crashed = (message: string): RunReply => ({ outcome: "trap", exitCode: -1, message, stdout: "", stderr: "" });
    const timer = setTimeout(() => {
      void worker.terminate();
      resolve(crashed(`timed out after ${TEST_TIMEOUT_MS} ms`));
    }, TEST_TIMEOUT_MS);
    worker.once("message", (reply: RunReply) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(reply);
    });
    worker.once("error", (e: unknown) => {
      clearTimeout(timer);
      resolve(crashed(`worker crashed: ${String(e)}`));
    });
  });

// ---------------------------------------------------------------------------------------------

/** Runs every test in order, printing one line each; returns the tally. */
async function runAll(
  suite: string,
  tests: string[],
  runner: Runner,
  mountRoot: string,
  signal: AbortSignal,
): Promise<{ passed: number; failed: number }> {
  let passed = 0;
  let failed = 0;
  for (const [index, wasmPath] of tests.entries()) {
    if (signal.aborted) break;
    const name = wasmPath.slice(join(suite, "tests").length + 1);
    const test = loadTest(wasmPath);
    let failure: string | undefined;
    let stderr = "";
    if (typeof test === "string") {
      failure = `cannot run: ${test}`;
    } else {
      let rootCopy: string | undefined;
      try {
        if (test.root !== undefined) rootCopy = await copyRoot(wasmPath, test.root, mountRoot, index);
        const reply = await runner(wasmPath, test, rootCopy);
        failure = judge(test, reply);
        stderr = reply.stderr;
      } catch (e: unknown) {
        failure = `cannot prepare: ${e instanceof Error ? e.message : String(e)}`;
      } finally {
        if (rootCopy !== undefined) await rm(rootCopy, { recursive: true, force: true });
      }
    }
    if (failure === undefined) {
      passed++;
      console.log(`ok   ${name}`);
    } else {
      failed++;
      console.log(`FAIL ${name}: ${failure}`);
      if (stderr !== "") console.log(`     stderr: ${stderr.trim().split("\n").slice(0, STDERR_LINES_SHOWN).join("\n             ")}`);
    }
  }
  return { passed, failed };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({ options: { direct: { type: "boolean", default: false } }, allowPositionals: true });
  const suite = positionals[0] ?? process.env["WASI_TESTSUITE_DIR"];
  if (suite === undefined || !existsSync(join(suite, "tests")) || !statSync(join(suite, "tests")).isDirectory()) {
    console.log("wasi-conformance: skipped: no suite (no local copy of the WASI test suite).");
    console.log("To run it: git clone --depth 1 -b prod/testsuite-base https://github.com/WebAssembly/wasi-testsuite /tmp/wasi-testsuite");
    console.log("           scripts/wasi-conformance /tmp/wasi-testsuite   (or set WASI_TESTSUITE_DIR)");
    return 0;
  }
  const tests = findTests(suite);
  // Stop between tests on a signal or when stdout goes away (piped into `head`), so the finally
  // below still stops the daemon and removes the temp dir instead of leaving an orphan behind.
  const stop = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => stop.abort(signal));
  process.stdout.on("error", (e: unknown) => stop.abort(e));
  const started = performance.now();
  const work = await mkdtemp(join(tmpdir(), "wasi-conformance-"));
  let daemon: Daemon | undefined;
  let failedCount = 0;
  let passedCount = 0;
  try {
    const mountRoot = join(work, "mounts");
    await mkdir(mountRoot);
    let runner: Runner;
    if (values.direct) {
      console.log(`wasi-conformance: ${tests.length} tests on our preview1 host, in-process (--direct)`);
      runner = directRunner;
    } else {
      const keysDir = join(work, "keys");
      await mkdir(keysDir);
      const signer = policySigner();
      await writeFile(join(keysDir, `${KEY_ID}.pub`), signer.publicKeyPem);
      daemon = await startDaemon(work, keysDir, mountRoot);
      console.log(`wasi-conformance: ${tests.length} tests through sandboxd (Compile{wasm} + Execute over gRPC, signed policy)`);
      runner = daemonRunner(daemon.client, signer.sign);
    }
    ({ passed: passedCount, failed: failedCount } = await runAll(suite, tests, runner, mountRoot, stop.signal));
    if (failedCount > 0 && daemon !== undefined) {
      // Its info lines (one per compile and execute) say nothing the per-test lines do not.
      const notable = daemon
        .logs()
        .split("\n")
        .filter((line) => line !== "" && !line.includes('"level":"info"'));
      if (notable.length > 0)
        console.log(
          `\nsandboxd warnings and errors (last ${DAEMON_LOG_LINES_SHOWN}):\n${notable.slice(-DAEMON_LOG_LINES_SHOWN).join("\n")}`,
        );
    }
  } finally {
    await daemon?.stop();
    await rm(work, { recursive: true, force: true });
  }
  console.log(`\n(${((performance.now() - started) / 1000).toFixed(1)} s)`);
  if (stop.signal.aborted) console.log(`interrupted after ${passedCount + failedCount} of ${tests.length} tests`);
  console.log(`${passedCount} passed, ${failedCount} failed`);
  return failedCount === 0 && !stop.signal.aborted ? 0 : 1;
}

if (isMainThread) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      console.error(e);
      process.exitCode = 2;
    },
  );
} else {
  parentPort?.postMessage(runDirectInThisThread(workerData as DirectJob));
}
