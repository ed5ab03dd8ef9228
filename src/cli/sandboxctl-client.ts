/**
 * `sandboxctl compile | run | module-id | health | info`: a command-line client
 * of a running daemon's main socket. A thin adapter: it reads files, calls the
 * daemon, and prints what comes back the way rustc and a shell would.
 */
import { Metadata, status as GrpcStatus, type ServiceError, type ChannelOptions } from "@grpc/grpc-js";
import { lstat, readFile } from "node:fs/promises";
import { createConnection } from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultSocketPath } from "../daemon.js";
import { MAX_GRPC_MESSAGE_BYTES } from "../limits.js";
import {
  Outcome,
  outcomeToJSON,
  Severity,
  type CompileResponse,
  type Diagnostic,
  type ExecuteRequest,
  type InfoResponse,
  type LimitsInfo,
} from "../gen/grpc/sandbox/v1/sandbox.js";
import { connect, type SandboxClient } from "../grpc/client.js";
import { errorInfoOf } from "../grpc/status.js";
import { parseSignedPolicyFile } from "../policy/signed-policy-file.js";
import { UsageError } from "./usage-error.js";

/** Usage of the client commands, part of sandboxctl's. */
export const CLIENT_USAGE = `  sandboxctl compile [--socket S] [--json] FILE.rs
      compiles through the daemon; prints rustc-style diagnostics (colour on a terminal unless NO_COLOR)
      and the module id; exit 0 when it compiled, 1 when it did not
  sandboxctl module-id [--socket S] FILE.rs
      prints the module id a policy can bind to (no rustc run when the daemon has it cached)
  sandboxctl run [--socket S] [--context FILE|-] [--policy SIGNED.json] [--arg A]... [--env K=V]... FILE.rs|MODULE_ID
      runs a script, streaming its stdout and stderr as it writes them and printing each denial;
      exits with the script's exit code, or for another outcome:
        121 compile error   122 trap   123 memory limit   124 timeout   125 output limit   130 cancelled
  sandboxctl health [--socket S]       SERVING / NOT_SERVING of the daemon and of Compile (exit 1 unless both serve)
  sandboxctl info [--socket S] [--json]  version, toolchain, defaults and ceilings, trusted keys, cache, workers
      S is the daemon's socket, a path or unix:///path (default: $SANDBOXD_SOCKET, else ${defaultSocketPath()});
      exit 69 when no daemon listens there, 1 when the daemon refuses the call`;

/** Exit status of `run` for each outcome but OUTCOME_EXITED (which exits with the script's own code). */
export const RUN_EXIT_CODES: Readonly<Record<string, number>> = {
  OUTCOME_COMPILE_ERROR: 121,
  OUTCOME_TRAP: 122,
  OUTCOME_MEMORY_LIMIT: 123,
  OUTCOME_TIMEOUT: 124,
  OUTCOME_OUTPUT_LIMIT: 125,
  OUTCOME_CANCELLED: 130,
};
/** Exit status when the daemon refuses the call (a gRPC error) or the compile fails. */
const EXIT_FAILED = 1;
/** Exit status when no daemon listens on the socket (sysexits' EX_UNAVAILABLE). */
export const EXIT_NO_DAEMON = 69;
/** How long to wait for the socket to accept a connection before saying no daemon listens. */
const CONNECT_PROBE_TIMEOUT_MS = 2_000;
/** Deadline of health and info calls. */
const QUICK_CALL_DEADLINE_MS = 10_000;
/** A compile that takes longer than this shows a progress line on a terminal (a cache hit never does). */
const PROGRESS_AFTER_MS = 300;
/** How often the progress line is redrawn. */
const PROGRESS_INTERVAL_MS = 100;
/** A module id, as Execute takes it. */
const MODULE_ID = /^[0-9a-f]{64}$/;
/** Name of the service whose health says whether Compile works. */
const SANDBOX_SERVICE = "sandbox.v1.SandboxService";

/** No daemon at the socket: a one-line explanation, exit 69. */
class NoDaemonError extends Error {}

/** Runs one client command; returns the exit status. */
export async function clientCommand(command: string, args: string[]): Promise<number> {
  const { values, positionals } = parse(args);
  const socket = socketPath(values.socket);
  await probeSocket(socket);
  const client = connect(`unix://${socket}`, { "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_BYTES } satisfies ChannelOptions);
  try {
    switch (command) {
      case "compile":
        return await compileCommand(client, single(positionals, "FILE.rs"), values.json === true, false);
      case "module-id":
        return await compileCommand(client, single(positionals, "FILE.rs"), false, true);
      case "run":
        return await runCommand(client, single(positionals, "FILE.rs or MODULE_ID"), values);
      case "health":
        none(positionals);
        return await healthCommand(client);
      case "info":
        none(positionals);
        return await infoCommand(client, values.json === true);
      default:
        throw new UsageError(`unknown command: ${command}`);
    }
  } catch (e: unknown) {
    if (e instanceof UsageError || !isServiceError(e)) throw e;
    if (e.code === GrpcStatus.UNAVAILABLE && !errorInfoOf(e.metadata))
      throw new NoDaemonError(`no daemon answers on ${socket}: ${e.details}`);
    const reason = errorInfoOf(e.metadata)?.reason;
    process.stderr.write(`sandboxctl: ${reason ? `${reason}: ` : ""}${e.details}\n`);
    return EXIT_FAILED;
  } finally {
    client.close();
  }
}

/** Whether an error is a client command's one-line "no daemon" report, and its exit status. */
export function noDaemonExit(e: unknown): number | undefined {
  if (!(e instanceof NoDaemonError)) return undefined;
  process.stderr.write(`sandboxctl: ${e.message}\n`);
  return EXIT_NO_DAEMON;
}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: "string" },
        json: { type: "boolean" },
        context: { type: "string" },
        policy: { type: "string" },
        arg: { type: "string", multiple: true },
        env: { type: "string", multiple: true },
      },
    });
  } catch (e: unknown) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

type Values = ReturnType<typeof parse>["values"];

function single(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one ${what} argument`);
  return positionals[0]!;
}

function none(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals.join(" ")}`);
}

/** The socket path from --socket (a path or unix:// URL), $SANDBOXD_SOCKET, or the daemon's default. */
export function socketPath(flag: string | undefined): string {
  const given = flag ?? process.env["SANDBOXD_SOCKET"];
  if (given === undefined || given === "") return defaultSocketPath();
  if (given.startsWith("unix:")) {
    const p = given.replace(/^unix:(\/\/)?/, "");
    if (!path.isAbsolute(p)) throw new UsageError(`a unix:// socket URL needs an absolute path: ${given}`);
    return p;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(given)) throw new UsageError(`--socket takes a path or unix:///path, not ${given}`);
  return path.resolve(given);
}

/** Says in one line why nothing can be reached at the socket, before a gRPC call retries in silence. */
async function probeSocket(socket: string): Promise<void> {
  const stat = await lstat(socket).catch(() => undefined);
  if (!stat)
    throw new NoDaemonError(`no daemon listens on ${socket}: no such socket (start sandboxd, or pass --socket or SANDBOXD_SOCKET)`);
  if (!stat.isSocket()) throw new NoDaemonError(`${socket} is not a socket (pass the daemon's --listen path with --socket)`);
  await new Promise<void>((resolve, reject) => {
    const connection = createConnection(socket);
    connection.setTimeout(CONNECT_PROBE_TIMEOUT_MS, () => {
      connection.destroy();
      reject(new NoDaemonError(`no daemon answers on ${socket} within ${CONNECT_PROBE_TIMEOUT_MS} ms`));
    });
    connection.once("connect", () => {
      connection.destroy();
      resolve();
    });
    connection.once("error", (e: NodeJS.ErrnoException) => {
      const why =
        e.code === "ECONNREFUSED"
          ? "nothing listens there (a stale socket?)"
          : e.code === "EACCES"
            ? "permission denied (is your user in the socket's group?)"
            : e.message;
      reject(new NoDaemonError(`cannot connect to ${socket}: ${why}`));
    });
  });
}

function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === "number" && "details" in e;
}

/** Whether to colour text written to a stream: a terminal, and NO_COLOR unset or empty. */
function colourFor(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && !process.env["NO_COLOR"];
}

const STYLES = { red: "\x1b[1;31m", yellow: "\x1b[1;33m", blue: "\x1b[1;34m", bold: "\x1b[1m", reset: "\x1b[0m" } as const;

/**
 * A diagnostic as rustc prints it: its rendered text (with the file name put back), or
 * `severity[code]: message` when rustc gave none. Colour marks the severity and the gutters.
 */
export function formatDiagnostic(d: Diagnostic, file: string, colour: boolean): string {
  const severity = d.severity === Severity.SEVERITY_ERROR ? "error" : d.severity === Severity.SEVERITY_WARNING ? "warning" : "note";
  let text = d.rendered !== "" ? d.rendered : `${severity}${d.code ? `[${d.code}]` : ""}: ${d.message}\n`;
  // The daemon compiles the source under a name of its own; show the user's file instead.
  text = text.replace(/(-->\s+)[^\s:]+\.rs(?=:\d)/g, `$1${file}`);
  if (!text.endsWith("\n")) text += "\n";
  if (!colour) return text;
  return text
    .replace(/^(error)(\[E\d{4}\])?(:)/gm, `${STYLES.red}$1$2${STYLES.reset}${STYLES.bold}$3`)
    .replace(/^(warning)(\[[^\]]+\])?(:)/gm, `${STYLES.yellow}$1$2${STYLES.reset}${STYLES.bold}$3`)
    .replace(/^(.*)$/m, `$1${STYLES.reset}`)
    .replace(/^(\s*)(-->|\d*\s*\||=)/gm, `$1${STYLES.blue}$2${STYLES.reset}`);
}

/** Shows "compiling FILE (Ns)" on a terminal's stderr while a call runs, once it takes longer than a cache hit. */
function progress(label: string): () => void {
  if (!process.stderr.isTTY) return () => undefined;
  const started = Date.now();
  let shown = false;
  const timer = setInterval(() => {
    const ms = Date.now() - started;
    if (ms < PROGRESS_AFTER_MS) return;
    shown = true;
    process.stderr.write(`\r\x1b[2K${label} (${(ms / 1000).toFixed(1)}s)`);
  }, PROGRESS_INTERVAL_MS);
  return () => {
    clearInterval(timer);
    if (shown) process.stderr.write("\r\x1b[2K");
  };
}

async function readSource(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (e: unknown) {
    throw new UsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function printDiagnostics(response: CompileResponse, file: string): void {
  const colour = colourFor(process.stderr);
  for (const d of response.diagnostics) process.stderr.write(formatDiagnostic(d, file, colour) + "\n");
}

async function compileCommand(client: SandboxClient, file: string, json: boolean, idOnly: boolean): Promise<number> {
  const source = await readSource(file);
  const done = progress(`compiling ${file}`);
  let response: CompileResponse;
  try {
    response = await client.compile({ input: { $case: "source", value: source } });
  } finally {
    done();
  }
  if (json) {
    process.stdout.write(JSON.stringify({ ...response, diagnostics: response.diagnostics.length }, null, 2) + "\n");
    return response.ok ? 0 : EXIT_FAILED;
  }
  if (!idOnly || !response.ok) printDiagnostics(response, file);
  if (!response.ok) {
    process.stderr.write(`sandboxctl: ${file} did not compile\n`);
    return EXIT_FAILED;
  }
  process.stdout.write(response.moduleId + "\n");
  if (!idOnly)
    process.stderr.write(`compiled ${file}${response.cacheHit ? " (cached)" : ""} in ${(response.durationUs / 1000).toFixed(1)} ms\n`);
  return 0;
}

/** Reads `--context FILE` (or `-`, stdin) as the script's stdin. */
async function readContext(file: string | undefined): Promise<Buffer> {
  if (file === undefined) return Buffer.alloc(0);
  if (file !== "-") {
    try {
      return await readFile(file);
    } catch (e: unknown) {
      throw new UsageError(`cannot read --context ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks);
}

async function runRequest(target: string, values: Values): Promise<ExecuteRequest> {
  const env = new Map<string, string>();
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--env takes KEY=VALUE, got ${JSON.stringify(pair)}`);
    env.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  let policy: ExecuteRequest["policy"];
  if (values.policy !== undefined) {
    let text: string;
    try {
      text = await readFile(values.policy, "utf8");
    } catch (e: unknown) {
      throw new UsageError(`cannot read --policy ${values.policy}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const parsed = parseSignedPolicyFile(text);
    if (!parsed.ok) throw new UsageError(`${values.policy}: ${parsed.error}`);
    policy = { policy: Buffer.from(parsed.value.policy), keyId: parsed.value.keyId, signature: Buffer.from(parsed.value.signature) };
  }
  const isId = MODULE_ID.test(target);
  return {
    target: isId ? { $case: "moduleId", value: target } : { $case: "source", value: await readSource(target) },
    stdin: await readContext(values.context),
    args: values.arg ?? [],
    env,
    policy,
  };
}

async function runCommand(client: SandboxClient, target: string, values: Values): Promise<number> {
  const request = await runRequest(target, values);
  const file = MODULE_ID.test(target) ? `${target}.rs` : target;
  let done: () => void = () => undefined;
  const call = client.raw.streamOutput(request, new Metadata());
  // Ctrl-C cancels the call, so the guest ends as OUTCOME_CANCELLED and the daemon frees its worker.
  const onSigint = (): void => call.cancel();
  process.once("SIGINT", onSigint);
  try {
    return await new Promise<number>((resolve, reject) => {
      let code: number | undefined;
      call.on("data", (message: { event?: { $case: string; value: unknown } }) => {
        const event = message.event;
        if (!event) return;
        switch (event.$case) {
          case "compiling":
            if (!(event.value as { cacheHit: boolean }).cacheHit) done = progress(`compiling ${file}`);
            break;
          case "started":
            done();
            break;
          case "stdout":
            process.stdout.write(event.value as Uint8Array);
            break;
          case "stderr":
            process.stderr.write(event.value as Uint8Array);
            break;
          case "denial": {
            const d = event.value as { operation: string; path: string; reason: string };
            process.stderr.write(`sandboxctl: denied: ${d.operation} ${d.path}: ${d.reason}\n`);
            break;
          }
          case "finished": {
            done();
            const r = event.value as { outcome: Outcome; exitCode?: number; message: string; diagnostics: Diagnostic[] };
            if (r.outcome === Outcome.OUTCOME_EXITED) code = r.exitCode ?? 0;
            else {
              const name = outcomeToJSON(r.outcome);
              if (r.outcome === Outcome.OUTCOME_COMPILE_ERROR) printDiagnostics({ diagnostics: r.diagnostics } as CompileResponse, file);
              process.stderr.write(
                `sandboxctl: ${name
                  .replace(/^OUTCOME_/, "")
                  .toLowerCase()
                  .replace(/_/g, " ")}${r.message ? `: ${r.message}` : ""}\n`,
              );
              code = RUN_EXIT_CODES[name] ?? EXIT_FAILED;
            }
            break;
          }
        }
      });
      call.on("error", reject);
      call.on("end", () => (code === undefined ? reject(new Error("the stream ended without a finished event")) : resolve(code)));
    });
  } catch (e: unknown) {
    if (isServiceError(e) && e.code === GrpcStatus.CANCELLED) return RUN_EXIT_CODES["OUTCOME_CANCELLED"]!;
    throw e;
  } finally {
    done();
    process.removeListener("SIGINT", onSigint);
  }
}

async function healthCommand(client: SandboxClient): Promise<number> {
  const check = (service: string): Promise<string> =>
    new Promise((resolve, reject) => {
      client.raw.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        // HealthCheckRequest: field 1, the service name.
        (name: string) => Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(name)]), Buffer.from(name)]),
        (bytes: Buffer) =>
          ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"][bytes.length >= 2 && bytes[0] === 0x08 ? bytes[1]! : 0] ?? "UNKNOWN",
        service,
        new Metadata(),
        { deadline: Date.now() + QUICK_CALL_DEADLINE_MS },
        (e, value) => (e ? reject(e) : resolve(value ?? "UNKNOWN")),
      );
    });
  const [server, compile] = await Promise.all([check(""), check(SANDBOX_SERVICE)]);
  process.stdout.write(`daemon: ${server}\ncompile: ${compile}\n`);
  return server === "SERVING" && compile === "SERVING" ? 0 : EXIT_FAILED;
}

/** Bytes in the largest binary unit that keeps them whole-ish: 16 MiB, 1.5 GiB. */
function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

function limits(l: LimitsInfo | undefined): string {
  if (!l) return "?";
  return `memory ${bytes(l.memoryBytes)}, timeout ${l.timeoutMs} ms, output ${bytes(l.outputBytes)}, writes ${bytes(l.writeBytes)}`;
}

async function infoCommand(client: SandboxClient, json: boolean): Promise<number> {
  const info: InfoResponse = await client.info({ deadline: Date.now() + QUICK_CALL_DEADLINE_MS });
  if (json) {
    process.stdout.write(JSON.stringify(info, null, 2) + "\n");
    return 0;
  }
  const t = info.toolchain;
  const lines = [
    `sandboxd ${info.version}`,
    `toolchain:  ${t?.available ? `${t.rustc} (${t.version}), target ${t.target}${t.insecureCompile ? ", INSECURE: no bubblewrap" : ""}` : `unavailable: ${t?.unavailableReason ?? "?"}`}`,
    `defaults:   ${limits(info.defaults)}`,
    `ceilings:   ${limits(info.ceilings)}`,
    `keys:       ${info.trustedKeyIds.length ? info.trustedKeyIds.join(", ") : "(none)"}${info.allowUnsigned ? "; unsigned requests allowed" : ""}`,
    `mounts:     ${info.allowedMountRoots.length ? info.allowedMountRoots.join(", ") : "(no mount roots allowed)"}`,
    `cache:      ${info.cache?.entries ?? 0} entries, ${bytes(info.cache?.sizeBytes ?? 0)} of ${bytes(info.cache?.maxBytes ?? 0)}`,
    `workers:    ${info.workers?.workers ?? 0} (${info.workers?.busy ?? 0} busy), ${info.workers?.queued ?? 0} queued of at most ${info.workers?.maxQueued ?? 0}`,
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}
