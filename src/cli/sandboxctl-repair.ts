/**
 * `sandboxctl compile --repair FILE`: asks a running daemon to compile a script and repair it, prints
 * the repair as a unified diff (and each edit, with the error it fixes, on stderr), and with
 * `--write` replaces the file with the repaired source. A thin adapter: the daemon does the work.
 */
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { status, type ServiceError } from "@grpc/grpc-js";
import { writeFileAtomic } from "../atomic-file.js";
import { defaultSocketPath } from "../daemon.js";
import { applicabilityToJSON, Severity, type CompileResponse, type RepairEdit } from "../gen/grpc/sandbox/v1/sandbox.js";
import { connect } from "../grpc/client.js";
import { errorInfoOf } from "../grpc/status.js";
import { unifiedDiff } from "./unified-diff.js";
import { UsageError } from "./usage-error.js";

/** Usage of `compile --repair`, part of sandboxctl's. */
export const REPAIR_USAGE = `  sandboxctl compile --repair [--socket SOCKET] [--write] [--json] FILE.rs
      compiles FILE.rs on a running daemon (SOCKET: a unix socket path, unix:///PATH or HOST:PORT; default: sandboxd's default --listen) and, if it
      fails, repairs it with rustc's suggestions; prints the repair as a unified diff (each edit and
      the error it fixes on stderr) and, with --write, replaces FILE.rs by the repaired source.
      Exit 0 when FILE.rs compiles or was repaired, 1 when no repair was found`;

/** A repair compiles several times; each rustc run alone may take up to a minute. */
const REPAIR_CALL_DEADLINE_MS = 5 * 60_000;

/** Exit status when the script neither compiles nor could be repaired, or the daemon refused. */
const EXIT_FAILED = 1;

/** Runs `sandboxctl compile --repair ...`; returns the exit status. */
export async function repairCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        repair: { type: "boolean", default: false },
        socket: { type: "string" },
        write: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
      },
    });
  } catch (e: unknown) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const { values, positionals } = parsed;
  if (!values.repair) throw new UsageError("compile needs --repair here");
  if (positionals.length !== 1) throw new UsageError("expected exactly one FILE.rs argument");
  const file = positionals[0]!;
  const source = await readSource(file);
  const socket = values.socket ?? defaultSocketPath();
  // A path (anything with a slash) is a unix socket; otherwise a grpc-js target such as 127.0.0.1:50051.
  const target = socket.startsWith("unix:") || !socket.includes("/") ? socket : `unix://${path.resolve(socket)}`;

  const client = connect(target);
  let response: CompileResponse;
  try {
    response = await client.compile(
      { input: { $case: "source", value: source }, repair: true },
      { deadline: Date.now() + REPAIR_CALL_DEADLINE_MS },
    );
  } catch (e: unknown) {
    const error = e as ServiceError;
    // A refusal by the daemon carries its catalogued reason; a daemon that is not there, only a status.
    const reason = errorInfoOf(error.metadata)?.reason ?? status[error.code] ?? "ERROR";
    process.stderr.write(`sandboxctl: ${reason}: ${error.details ?? String(e)}\n`);
    return EXIT_FAILED;
  } finally {
    client.close();
  }

  if (values.json) process.stdout.write(JSON.stringify(jsonOf(response), null, 2) + "\n");
  if (response.ok) {
    process.stderr.write(`${file} compiles (module ${response.moduleId}); nothing to repair\n`);
    return 0;
  }
  const repair = response.repair;
  if (!repair) {
    for (const d of response.diagnostics) if (d.severity === Severity.SEVERITY_ERROR && d.rendered !== "") process.stderr.write(d.rendered);
    process.stderr.write(`sandboxctl: ${file} does not compile and rustc's suggestions do not repair it\n`);
    return EXIT_FAILED;
  }
  if (!values.json) process.stdout.write(unifiedDiff(source, repair.source, file, file));
  for (const e of repair.edits) process.stderr.write(describeEdit(file, e) + "\n");
  process.stderr.write(
    `repaired in ${repair.rounds} round${repair.rounds === 1 ? "" : "s"}; the repaired source compiles (module ${repair.moduleId})\n`,
  );
  if (values.write) {
    const mode = (await stat(file)).mode & 0o7777;
    await writeFileAtomic(file, repair.source, mode);
    process.stderr.write(`wrote ${file}\n`);
  }
  return 0;
}

async function readSource(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (e: unknown) {
    throw new UsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** `FILE:LINE:COL: round N: insert "&" (MACHINE_APPLICABLE), consider borrowing here; fixes E0308 mismatched types`. */
function describeEdit(file: string, e: RepairEdit): string {
  const s = e.span;
  const where = s ? `${path.normalize(file)}:${s.lineStart}:${s.columnStart}` : file;
  const text = JSON.stringify(s?.suggestedReplacement ?? "");
  const empty = s !== undefined && s.lineStart === s.lineEnd && s.columnStart === s.columnEnd;
  const what = s?.suggestedReplacement === "" ? "delete" : empty ? `insert ${text}` : `replace with ${text}`;
  const rating = s ? applicabilityToJSON(s.applicability).replace(/^APPLICABILITY_/, "") : "";
  return `${where}: round ${e.round}: ${what} (${rating}), ${e.suggestion}; fixes ${e.code ? `${e.code} ` : ""}${e.message}`;
}

/** The response as JSON, without rustc's long explanations (they are in the daemon's own response). */
function jsonOf(response: CompileResponse): unknown {
  return {
    ok: response.ok,
    moduleId: response.moduleId,
    repair: response.repair && {
      source: response.repair.source,
      moduleId: response.repair.moduleId,
      rounds: response.repair.rounds,
      cacheHit: response.repair.cacheHit,
      edits: response.repair.edits.map((e) => ({
        ...e,
        span: e.span && { ...e.span, applicability: applicabilityToJSON(e.span.applicability) },
      })),
    },
    errors: response.diagnostics.filter((d) => d.severity === Severity.SEVERITY_ERROR).map((d) => ({ code: d.code, message: d.message })),
  };
}
