/**
 * The agent's loop — write, compile, read the errors, fix, run, read the result — against a real
 * daemon and real rustc: fixes applied, explanations, cached failures, progress while compiling,
 * exit codes that cannot be mistaken, and output caps that always fit the response carrying them.
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { MAX_DIAGNOSTICS_BYTES, MAX_STREAM_EVENT_OUTPUT_BYTES, MAX_UNARY_OUTPUT_BYTES } from "../../src/limits.js";
import {
  Applicability,
  Outcome,
  SandboxServiceClient,
  Severity,
  type ExecuteEvent,
  type ExecuteResponse,
} from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { moduleTarget, rejection, sourceTarget, startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { script } from "../helpers/fixtures.js";
import { watchChildren } from "../helpers/processes.js";
import { makeKey, signed, tempDir, wire, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

const src = (value: string): { input: { $case: "source"; value: string } } => ({ input: { $case: "source", value } });

/** Makes a source unique, so the test sees a cold compile. */
const unique = (source: string): string => `// ${randomBytes(8).toString("hex")}\n${source}`;

/** An unused import (a warning) and a missing borrow (E0308): both fixes are machine-applicable. */
const FIXABLE = `use std::collections::HashMap;
fn takes(s: &String) -> usize { s.len() }
fn main() {
    let greeting = String::from("héllo wörld ✓");
    let n = takes(greeting);
    println!("{}", n)
}
`;

/** Fails with E0308 and an unused-import lint, so it carries an E-code and a lint name. */
const FAILING = `use std::collections::HashMap;
fn main() {
    let x: i32 = "not a number";
    println!("{}", x);
}
`;

const kinds = (events: { event: ExecuteEvent }[]): (string | undefined)[] => events.map((e) => e.event.event?.$case);

describe("agent loop: fixes and explanations (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  before(async function () {
    daemon = await startDaemon();
  });
  after(async function () {
    await daemon?.stop();
  });

  it("fixed_source applies the machine-applicable suggestions, and it compiles", async function () {
    const source = unique(FIXABLE);
    const r = await daemon.compile(src(source));
    expect(r.ok).to.equal(false);
    const borrow = r.diagnostics
      .find((d) => d.code === "E0308")!
      .children.flatMap((c) => c.spans)
      .find((s) => s.suggestedReplacement === "&greeting");
    expect(borrow?.applicability).to.equal(Applicability.APPLICABILITY_MACHINE_APPLICABLE);
    const removal = r.diagnostics.find((d) => d.code === "unused_imports")!.children.flatMap((c) => c.spans)[0];
    expect(removal).to.include({ suggestedReplacement: "", applicability: Applicability.APPLICABILITY_MACHINE_APPLICABLE });
    expect(r.fixedSource).to.equal(source.replace("use std::collections::HashMap;", "").replace("takes(greeting)", "takes(&greeting)"));
    const fixed = await daemon.compile(src(r.fixedSource));
    expect(fixed.ok, JSON.stringify(fixed.diagnostics)).to.equal(true);
    const run = await daemon.execute({ target: moduleTarget(fixed.moduleId) });
    expect(run.stdout.toString()).to.equal(`${Buffer.byteLength("héllo wörld ✓")}\n`);
  });

  it("fixed_source is empty when no suggestion is machine-applicable; spans without one say UNSPECIFIED", async function () {
    const r = await daemon.compile(src(unique('fn main() {\n    let total = 1;\n    println!("{}", totl);\n}\n')));
    expect(r.ok).to.equal(false);
    expect(r.fixedSource).to.equal("");
    const d = r.diagnostics.find((x) => x.code === "E0425")!;
    expect(d.spans.every((s) => s.applicability === Applicability.APPLICABILITY_UNSPECIFIED)).to.equal(true);
    expect(d.children[0]?.spans[0]).to.include({
      suggestedReplacement: "total",
      applicability: Applicability.APPLICABILITY_MAYBE_INCORRECT,
    });
  });

  it("a warning-only compile also returns its fixed source, on a cache hit too", async function () {
    const source = unique('fn main() {\n    let mut x = 1;\n    println!("{}", x);\n}\n');
    const first = await daemon.compile(src(source));
    expect(first.ok).to.equal(true);
    expect(first.fixedSource).to.equal(source.replace("let mut x", "let x"));
    const again = await daemon.compile(src(source));
    expect(again).to.include({ cacheHit: true, fixedSource: first.fixedSource });
  });

  it("a source with a thousand errors gets at most MAX_DIAGNOSTICS_BYTES of them, and a note counting the rest", async function () {
    const body = Array.from({ length: 1000 }, (_, i) => `    missing_${i};`).join("\n");
    const r = await daemon.compile(src(unique(`fn main() {\n${body}\n}\n`)));
    expect(r.ok).to.equal(false);
    const note = r.diagnostics[r.diagnostics.length - 1]!;
    expect(note.severity).to.equal(Severity.SEVERITY_NOTE);
    const kept = r.diagnostics.slice(0, -1);
    expect(kept.every((d) => d.code === "E0425")).to.equal(true);
    expect(note.message).to.contain(`${1000 - kept.length} more diagnostics`);
    expect(Buffer.byteLength(JSON.stringify(kept))).to.be.at.most(MAX_DIAGNOSTICS_BYTES);
    // in rustc's order: the first error is about the first line of the body
    expect(kept[0]!.message).to.contain("missing_0");
  });

  it("an E-code carries the text of `rustc --explain`; a lint carries a lint name and no explanation", async function () {
    const r = await daemon.compile(src(unique(FAILING)));
    const error = r.diagnostics.find((d) => d.code === "E0308")!;
    const explain = await execa("/usr/bin/rustc", ["--explain", "E0308"], { stripFinalNewline: false });
    expect(error.explanation).to.equal(explain.stdout);
    expect(error.explanation).to.contain("Expected type did not match the received type.");
    expect(error.children.every((c) => c.explanation === "")).to.equal(true);
    const lint = r.diagnostics.find((d) => d.severity === Severity.SEVERITY_WARNING)!;
    expect(lint.code)
      .to.equal("unused_imports")
      .and.not.match(/^E\d{4}$/);
    expect(lint.explanation).to.equal("");
  });
});

describe("agent loop: a failed compile is cached like a module (real daemon, real rustc)", function () {
  let cacheDir: string;
  before(async function () {
    cacheDir = await mkdtemp(path.join(tmpdir(), "agent-loop-cache-"));
  });
  after(async function () {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it("regression: a failing compile retried is a cache hit with identical diagnostics and no rustc process", async function () {
    const daemon = await startDaemon({ cacheDir, args: ["--allow-unsigned", "--log-level", "debug"] });
    try {
      const source = unique(FIXABLE);
      const pid = daemon.process.pid!;
      const first = await watchChildren(pid, () => daemon.compile(src(source)));
      expect(first.result).to.include({ ok: false, cacheHit: false, moduleId: "" });
      expect(first.seen, "the first compile runs rustc").to.not.be.empty;
      const second = await watchChildren(pid, () => daemon.compile(src(source)));
      expect(second.result).to.include({ ok: false, cacheHit: true, moduleId: "" });
      expect(second.seen, "processes spawned by the retry").to.deep.equal([]);
      expect(second.result.diagnostics).to.deep.equal(first.result.diagnostics);
      expect(second.result.fixedSource).to.equal(first.result.fixedSource);
      expect(
        daemon
          .logs()
          .split("\n")
          .filter((l) => l.includes('"message":"compile failed"')),
      ).to.have.length(1);
      // Execute with the same source answers from the cache too
      const executed = await watchChildren(pid, () => daemon.stream({ target: sourceTarget(source) }));
      expect(executed.seen).to.deep.equal([]);
      expect(kinds(executed.result)).to.deep.equal(["compiling", "finished"]);
      expect((executed.result[0]!.event.event as { value: { cacheHit: boolean } }).value.cacheHit).to.equal(true);
    } finally {
      await daemon.stop();
    }
  });

  it("a cached failure survives a restart, and a corrupt one is evicted and compiled again, never served", async function () {
    const own = await mkdtemp(path.join(tmpdir(), "agent-loop-failure-"));
    const source = unique(FAILING);
    try {
      const d1 = await startDaemon({ cacheDir: own });
      const first = await d1.compile(src(source));
      await d1.stop();
      const d2 = await startDaemon({ cacheDir: own });
      try {
        const again = await d2.compile(src(source));
        expect(again).to.include({ ok: false, cacheHit: true });
        expect(again.diagnostics).to.deep.equal(first.diagnostics);
      } finally {
        await d2.stop();
      }
      const [entry] = await readdir(path.join(own, "modules"));
      const file = path.join(own, "modules", entry!);
      const raw = await readFile(file);
      raw[raw.byteLength - 10] ^= 0x55;
      await writeFile(file, raw);
      const d3 = await startDaemon({ cacheDir: own });
      try {
        const rebuilt = await d3.compile(src(source));
        expect(rebuilt).to.include({ ok: false, cacheHit: false });
        expect(rebuilt.diagnostics).to.deep.equal(first.diagnostics);
        expect(d3.logs()).to.contain("corrupt");
        // the id of a failed source names no module
        const id = entry!.replace(/\.mod$/, "");
        expect(await rejection(d3.execute({ target: moduleTarget(id) }))).to.include({
          code: status.NOT_FOUND,
          reason: "MODULE_NOT_FOUND",
        });
      } finally {
        await d3.stop();
      }
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});

describe("agent loop: progress, exit codes and durations (real daemon, real rustc)", function () {
  let daemon: TestDaemon;
  let key: TestKey;
  let keys: { path: string; remove: () => Promise<void> };
  before(async function () {
    keys = await tempDir("agent-loop-keys");
    key = makeKey("agent-loop");
    await writePublicKeys(keys.path, [key]);
    daemon = await startDaemon({ args: ["--allow-unsigned", "--trusted-keys", keys.path] });
  });
  after(async function () {
    await daemon?.stop();
    await keys?.remove();
  });

  const policy = (fields: { timeoutMs?: number; maxOutputBytes?: number }): ReturnType<typeof wire> =>
    wire(signed({ policyId: "agent-loop", expiresAtUnix: Math.floor(Date.now() / 1000) + 3600, ...fields }, key));

  it("regression: a stream with bad source is exactly `compiling` then a COMPILE_ERROR `finished` (no `started`)", async function () {
    const events = await daemon.stream({ target: sourceTarget(unique(FAILING)) });
    expect(kinds(events)).to.deep.equal(["compiling", "finished"]);
    expect((events[0]!.event.event as { value: { cacheHit: boolean } }).value.cacheHit).to.equal(false);
    const finished = (events[1]!.event.event as { value: ExecuteResponse }).value;
    expect(finished.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
    expect(finished.diagnostics.map((d) => d.code)).to.include("E0308");
    expect(finished.exitCode).to.equal(undefined);
  });

  it("a stream of new source says `compiling` before rustc ends; a module_id stream has no `compiling`", async function () {
    const source = unique(script("exit_42"));
    const events = await daemon.stream({ target: sourceTarget(source) });
    expect(kinds(events).slice(0, 2)).to.deep.equal(["compiling", "started"]);
    expect((events[0]!.event.event as { value: { cacheHit: boolean } }).value.cacheHit).to.equal(false);
    const started = events[1]!;
    // rustc takes hundreds of milliseconds: `compiling` came long before the module existed
    expect(started.atMs - events[0]!.atMs).to.be.greaterThan(100);
    const moduleId = (started.event.event as { value: { moduleId: string } }).value.moduleId;
    const hit = await daemon.stream({ target: sourceTarget(source) });
    expect(kinds(hit).slice(0, 2)).to.deep.equal(["compiling", "started"]);
    expect((hit[0]!.event.event as { value: { cacheHit: boolean } }).value.cacheHit).to.equal(true);
    expect(kinds(await daemon.stream({ target: moduleTarget(moduleId) }))[0]).to.equal("started");
  });

  it("regression: exit_code is absent after a timeout, a trap and a compile error, and present (even 0) on an exit", async function () {
    const timeout = await daemon.execute({ target: sourceTarget(script("infinite_loop")), policy: policy({ timeoutMs: 300 }) });
    expect(timeout.outcome).to.equal(Outcome.OUTCOME_TIMEOUT);
    expect(timeout.exitCode).to.equal(undefined);
    const trap = await daemon.execute({ target: sourceTarget(script("unreachable")) });
    expect(trap.outcome).to.equal(Outcome.OUTCOME_TRAP);
    expect(trap.exitCode).to.equal(undefined);
    const failed = await daemon.execute({ target: sourceTarget(unique(FAILING)) });
    expect(failed.outcome).to.equal(Outcome.OUTCOME_COMPILE_ERROR);
    expect(failed.exitCode).to.equal(undefined);
    const zero = await daemon.execute({ target: sourceTarget('fn main() { println!("ok"); }\n') });
    expect(zero.outcome).to.equal(Outcome.OUTCOME_EXITED);
    expect(zero.exitCode).to.equal(0);
  });

  it("duration_us is the guest's run time alone; compiling is compile_duration_us", async function () {
    const cold = await daemon.execute({ target: sourceTarget(unique('fn main() { println!("hi"); }\n')) });
    expect(cold.outcome).to.equal(Outcome.OUTCOME_EXITED);
    // A cold compile runs rustc, which always outlasts printing "hi"; no absolute time is assumed.
    expect(cold.durationUs).to.be.greaterThan(0).and.below(cold.compileDurationUs);
    const byId = await daemon.execute({ target: moduleTarget(cold.moduleId) });
    expect(byId.compileDurationUs).to.equal(0);
    const failed = await daemon.execute({ target: sourceTarget(unique(FAILING)) });
    expect(failed.durationUs).to.equal(0);
    expect(failed.compileDurationUs).to.be.greaterThan(0);
  });

  it("regression: Execute refuses at policy time an output cap its one response could not carry; StreamOutput runs it", async function () {
    // One write of 8 MiB: one event carrying it would exceed a default client's 4 MiB receive limit.
    const source = unique("use std::io::Write;\nfn main() { std::io::stdout().write_all(&vec![b'y'; 8 * 1024 * 1024]).unwrap(); }\n");
    const tooLarge = policy({ maxOutputBytes: MAX_UNARY_OUTPUT_BYTES + 1 });
    const { result: refused, seen } = await watchChildren(daemon.process.pid!, () =>
      rejection(daemon.execute({ target: sourceTarget(source), policy: tooLarge })),
    );
    expect(refused).to.include({ code: status.INVALID_ARGUMENT, reason: "UNARY_OUTPUT_TOO_LARGE" });
    expect(refused.details).to.contain("StreamOutput").and.contain(String(MAX_UNARY_OUTPUT_BYTES));
    expect(seen, "refused before rustc ran").to.deep.equal([]);
    const events = await daemon.stream({ target: sourceTarget(source), policy: tooLarge });
    expect(kinds(events)[0]).to.equal("compiling");
    const outputs = events.filter((e) => e.event.event?.$case === "stdout").map((e) => (e.event.event as { value: Buffer }).value);
    expect(outputs.reduce((n, b) => n + b.byteLength, 0)).to.equal(8 * 1024 * 1024);
    expect(Math.max(...outputs.map((b) => b.byteLength))).to.be.at.most(MAX_STREAM_EVENT_OUTPUT_BYTES);
    const finished = (events[events.length - 1]!.event.event as { value: ExecuteResponse }).value;
    expect(finished).to.include({ outcome: Outcome.OUTCOME_EXITED, exitCode: 0 });
  });

  it("regression: one 8 MiB guest write reaches a default client (4 MiB receive limit) through StreamOutput", async function () {
    const source = unique("use std::io::Write;\nfn main() { std::io::stdout().write_all(&vec![b'w'; 8 * 1024 * 1024]).unwrap(); }\n");
    const events = await daemon.stream({ target: sourceTarget(source) });
    const outputs = events.filter((e) => e.event.event?.$case === "stdout").map((e) => (e.event.event as { value: Buffer }).value);
    expect(outputs.reduce((n, b) => n + b.byteLength, 0)).to.equal(8 * 1024 * 1024);
    expect(Math.max(...outputs.map((b) => b.byteLength))).to.be.at.most(MAX_STREAM_EVENT_OUTPUT_BYTES);
    expect(kinds(events)[kinds(events).length - 1]).to.equal("finished");
  });

  it("Execute accepts the largest output cap its response can carry, and delivers that much output", async function () {
    this.timeout(120_000);
    const source = unique(
      `use std::io::Write;\nfn main() { let v = vec![b'z'; ${MAX_UNARY_OUTPUT_BYTES}]; std::io::stdout().write_all(&v).unwrap(); std::io::stderr().write_all(&v).unwrap(); std::io::stdout().write_all(b"beyond").unwrap(); }\n`,
    );
    // a client that raised its receive limit, as the README tells clients of big outputs to
    const client = new SandboxServiceClient(`unix://${daemon.socketPath}`, credentials.createInsecure(), {
      "grpc.max_receive_message_length": -1,
    });
    try {
      const r = await new Promise<ExecuteResponse>((resolve, reject) =>
        client.execute(
          executeRequest({ target: sourceTarget(source), policy: policy({ maxOutputBytes: MAX_UNARY_OUTPUT_BYTES }) }),
          new Metadata(),
          (e: ServiceError | null, v: ExecuteResponse) => (e ? reject(e) : resolve(v)),
        ),
      );
      expect(r.outcome, r.message).to.equal(Outcome.OUTCOME_OUTPUT_LIMIT);
      expect(r.stdout.byteLength).to.equal(MAX_UNARY_OUTPUT_BYTES);
      expect(r.stderr.byteLength).to.equal(MAX_UNARY_OUTPUT_BYTES);
      expect(r.exitCode).to.equal(undefined);
    } finally {
      client.close();
    }
  });
});
