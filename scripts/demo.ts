/**
 * The README's demo: starts a real sandboxd on a throwaway unix socket,
 * compiles examples/hello.rs, executes it with a JSON context, prints the JSON
 * result and stops the daemon. Everything goes over real gRPC.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Outcome, outcomeToJSON, severityToJSON } from "../src/gen/grpc/sandbox/v1/sandbox.js";
import { connect } from "../src/grpc/client.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DAEMON = path.join(ROOT, "dist/src/cli/sandboxd.js");
/** The context the demo feeds the script on stdin. */
const CONTEXT = { name: "Ada", task: "greet" };

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), "sandboxd-demo-"));
  const socket = path.join(dir, "sandboxd.sock");
  const daemon = spawn(
    process.execPath,
    [DAEMON, "--listen", `unix://${socket}`, "--cache-dir", path.join(dir, "cache"), "--allow-unsigned"],
    {
      stdio: ["ignore", "inherit", "pipe"],
    },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      let log = "";
      daemon.stderr.on("data", (d: Buffer) => {
        log += d.toString();
        if (log.includes("sandboxd listening on")) resolve();
      });
      daemon.once("exit", (code) => reject(new Error(`sandboxd exited with ${code}:\n${log}`)));
    });
    console.error(`[demo] sandboxd is listening on unix://${socket}`);
    const client = connect(`unix://${socket}`);

    const source = await readFile(path.join(ROOT, "examples/hello.rs"), "utf8");
    const compiled = await client.compile({ input: { $case: "source", value: source } });
    if (!compiled.ok) {
      for (const d of compiled.diagnostics) console.error(`${severityToJSON(d.severity)} ${d.code}: ${d.message}`);
      throw new Error("examples/hello.rs did not compile");
    }
    console.error(`[demo] compiled examples/hello.rs → module ${compiled.moduleId} in ${(compiled.durationUs / 1000).toFixed(0)} ms`);
    const result = await client.execute({
      target: { $case: "moduleId", value: compiled.moduleId },
      stdin: Buffer.from(JSON.stringify(CONTEXT)),
    });
    console.error(
      `[demo] context ${JSON.stringify(CONTEXT)} → ${outcomeToJSON(result.outcome)}, exit ${result.exitCode}, ${result.durationUs} µs`,
    );
    if (result.stderr.byteLength) console.error(`[demo] guest stderr: ${result.stderr.toString().trimEnd()}`);
    client.close();
    if (result.outcome !== Outcome.OUTCOME_EXITED || result.exitCode !== 0) throw new Error(`unexpected result: ${result.message}`);
    // The JSON result, alone on stdout, so the demo can be piped into jq.
    console.log(JSON.stringify(JSON.parse(result.stdout.toString()), null, 2));
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((resolve) => (daemon.exitCode === null ? daemon.once("exit", resolve) : resolve(undefined)));
    console.error("[demo] sandboxd stopped");
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`[demo] failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
