/**
 * Runs the official WASI test suite (github WebAssembly/wasi-testsuite, branch prod/testsuite-base,
 * folders tests/* /testsuite/wasm32-wasip1) against our own preview1 host, one test per Worker so a
 * hang or crash costs only that test. For now it drives the host directly, not the daemon.
 *
 *   scripts/wasi-conformance [SUITE_DIR]      (or WASI_TESTSUITE_DIR=...)
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { WasiHost, type WasiRunResult } from "../src/runtime/wasi/host.js";
import { capMemory } from "../src/runtime/wasm/memory-cap.js";
import { validateCommandModule } from "../src/runtime/wasm/validate.js";

/** Wall-clock budget of one conformance test before it counts as hung. */
const TEST_TIMEOUT_MS = 20_000;
/** Memory each test may use (the suite's big_random_buf needs little). */
const TEST_MEMORY_LIMIT_BYTES = 512 * 1024 * 1024;
/** Output kept per stream. */
const TEST_MAX_OUTPUT_BYTES = 1024 * 1024;

interface Spec {
  readonly args?: string[];
  readonly env?: Record<string, string>;
  readonly root?: string;
  readonly exit_code?: number;
  readonly stdout?: string;
  readonly stderr?: string;
}

interface TestJob {
  readonly wasmPath: string;
  readonly spec: Spec;
}

interface TestReply {
  readonly result: WasiRunResult | { outcome: "invalid"; message: string };
  readonly stdout: string;
  readonly stderr: string;
}

function runInThisThread(job: TestJob): TestReply {
  const raw = readFileSync(job.wasmPath);
  const capped = capMemory(raw, TEST_MEMORY_LIMIT_BYTES);
  if (!capped.ok) return { result: { outcome: "invalid", message: capped.error }, stdout: "", stderr: "" };
  const module = new WebAssembly.Module(capped.wasm);
  const problems = validateCommandModule(module);
  if (problems.length > 0) return { result: { outcome: "invalid", message: problems.join("; ") }, stdout: "", stderr: "" };
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const dir = join(job.wasmPath, "..");
  const host = new WasiHost({
    args: [basename(job.wasmPath), ...(job.spec.args ?? [])],
    env: job.spec.env ?? {},
    stdin: new Uint8Array(0),
    mounts: job.spec.root !== undefined ? [{ hostPath: join(dir, job.spec.root), guestPath: "/", writable: true }] : [],
    memoryLimitBytes: TEST_MEMORY_LIMIT_BYTES,
    maxOutputBytes: TEST_MAX_OUTPUT_BYTES,
    onStdout: (b) => out.push(Buffer.from(b)),
    onStderr: (b) => err.push(Buffer.from(b)),
    onDenial: () => undefined,
  });
  const result = host.run(module);
  return { result, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
}

function runInWorker(job: TestJob): Promise<TestReply> {
  return new Promise((resolve) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job });
    const timer = setTimeout(() => {
      void worker.terminate();
      resolve({ result: { outcome: "trap", message: `timed out after ${TEST_TIMEOUT_MS} ms` }, stdout: "", stderr: "" });
    }, TEST_TIMEOUT_MS);
    worker.once("message", (reply: TestReply) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(reply);
    });
    worker.once("error", (e: unknown) => {
      clearTimeout(timer);
      resolve({ result: { outcome: "trap", message: `worker crashed: ${String(e)}` }, stdout: "", stderr: "" });
    });
  });
}

function findTests(suite: string): string[] {
  const testsDir = join(suite, "tests");
  const found: string[] = [];
  for (const lang of readdirSync(testsDir).sort()) {
    const dir = join(testsDir, lang, "testsuite", "wasm32-wasip1");
    if (!existsSync(dir)) continue;
    // Leftovers of earlier (failed) runs make tests fail with EEXIST; the suite names them *.cleanup.
    for (const sub of [dir, join(dir, "fs-tests.dir")]) {
      if (!existsSync(sub)) continue;
      for (const f of readdirSync(sub)) if (f.endsWith(".cleanup")) rmSync(join(sub, f), { recursive: true, force: true });
    }
    for (const f of readdirSync(dir).sort()) if (f.endsWith(".wasm")) found.push(join(dir, f));
  }
  return found;
}

function judge(spec: Spec, reply: TestReply): string | undefined {
  const r = reply.result;
  if (r.outcome !== "exited") return `${r.outcome}: ${r.message}`;
  const want = spec.exit_code ?? 0;
  if (r.exitCode !== want) return `exit code ${r.exitCode}, expected ${want}`;
  if (spec.stdout !== undefined && reply.stdout !== spec.stdout) return `stdout ${JSON.stringify(reply.stdout)}, expected ${JSON.stringify(spec.stdout)}`;
  if (spec.stderr !== undefined && reply.stderr !== spec.stderr) return `stderr ${JSON.stringify(reply.stderr)}, expected ${JSON.stringify(spec.stderr)}`;
  return undefined;
}

async function main(): Promise<number> {
  const suite = process.argv[2] ?? process.env["WASI_TESTSUITE_DIR"];
  if (suite === undefined || !existsSync(join(suite, "tests")) || !statSync(join(suite, "tests")).isDirectory()) {
    console.log("wasi-conformance: skipped (no local copy of the WASI test suite).");
    console.log("To run it: git clone --depth 1 -b prod/testsuite-base https://github.com/WebAssembly/wasi-testsuite /tmp/wasi-testsuite");
    console.log("           scripts/wasi-conformance /tmp/wasi-testsuite   (or set WASI_TESTSUITE_DIR)");
    return 0;
  }
  const tests = findTests(suite);
  let passed = 0;
  const failures: string[] = [];
  for (const wasmPath of tests) {
    const specPath = wasmPath.replace(/\.wasm$/, ".json");
    const spec: Spec = existsSync(specPath) ? (JSON.parse(readFileSync(specPath, "utf8")) as Spec) : {};
    const reply = await runInWorker({ wasmPath, spec });
    const failure = judge(spec, reply);
    const name = wasmPath.slice(join(suite, "tests").length + 1);
    if (failure === undefined) {
      passed++;
      if (process.env["VERBOSE"] !== undefined) console.log(`ok   ${name}`);
    } else {
      failures.push(name);
      console.log(`FAIL ${name}: ${failure}`);
      if (reply.stderr !== "") console.log(`     stderr: ${reply.stderr.trim().split("\n").slice(0, 6).join("\n             ")}`);
    }
  }
  console.log(`\nwasi-conformance: ${passed}/${tests.length} passed`);
  return failures.length === 0 ? 0 : 1;
}

if (isMainThread) {
  main().then((code) => { process.exitCode = code; }, (e: unknown) => {
    console.error(e);
    process.exitCode = 2;
  });
} else {
  parentPort?.postMessage(runInThisThread(workerData as TestJob));
}
