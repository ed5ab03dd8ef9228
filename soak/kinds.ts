/**
 * The kinds of call a soak mixes, each with what it must end in. A kind sends
 * one (or a few) real calls over the daemon's socket and judges the answer:
 * `ok`, `wrong-output` (the run succeeded but its bytes are not this run's
 * expected ones) or `unexpected` (another gRPC status or outcome than the kind
 * allows). Nothing here retries: every answer counts.
 */
import { Metadata, status as GrpcStatus, type ClientReadableStream, type ServiceError } from "@grpc/grpc-js";
import { sign } from "node:crypto";
import { Outcome, type ExecuteEvent, type ExecuteRequest, type ExecuteResponse } from "../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../src/grpc/client.js";
import { errorInfoOf } from "../src/grpc/status.js";
import { moduleTarget, sourceTarget } from "../test/helpers/daemon.js";
import { helloWasm } from "../test/helpers/hostile.js";
import { makeKey } from "../test/unit/policy-fixtures.js";
import type { Rng } from "./rng.js";
import { setRotatingKeyTrusted, SOAK_MAX_TIMEOUT_MS, type World } from "./world.js";

/** Wall-clock limit of runs that should finish: generous, a loaded 2-core machine must never make them time out. */
const NORMAL_TIMEOUT_MS = 30_000;
/** Range of the timeout_ms given to guests that never end on their own. */
const SHORT_TIMEOUT_MS = { min: 150, max: 300 } as const;
/** Range of the client deadline put on runs that never end on their own. */
const DEADLINE_MS = { min: 50, max: 300 } as const;
/** Range of the delay after which a client cancels a run that never ends on its own. */
const CANCEL_AFTER_MS = { min: 0, max: 300 } as const;
/** Range of the delay after which a never-read stream is cancelled. */
const UNREAD_CANCEL_AFTER_MS = { min: 300, max: 1000 } as const;
/** Memory limit of memory-bomb runs. */
const MEMBOMB_LIMIT_BYTES = 32 * 1024 * 1024;
/** Output cap of flood runs (stdout must come back at exactly this length). */
const FLOOD_CAP_BYTES = 256 * 1024;
/** Output cap of never-read floods: high, so only back-pressure can keep the daemon from buffering it all. */
const UNREAD_FLOOD_CAP_BYTES = 64 * 1024 * 1024;
/** Range of bytes a slowly read stream carries. */
const SLOW_STREAM_BYTES = { min: 256 * 1024, max: 2 * 1024 * 1024 } as const;
/** Range of the pause a slow reader takes after each event. */
const SLOW_READ_PAUSE_MS = { min: 1, max: 15 } as const;
/** Range of stdin sizes of normal runs. */
const STDIN_BYTES = { min: 0, max: 16 * 1024 } as const;
/** Range of lines one append run adds to the shared log. */
const APPEND_LINES = { min: 5, max: 40 } as const;

/** A kind's judgement of one call. */
export type Verdict = "ok" | "wrong-output" | "unexpected";

/** What one call ended in: a short label for the table (outcome or status) and the verdict. */
export interface Observation {
  readonly label: string;
  readonly verdict: Verdict;
  /** Why, when the verdict is not ok. */
  readonly detail?: string;
}

/** One append run that exited cleanly: its lines must all be in the shared log, whole, exactly once. */
export interface AppendRecord {
  readonly tag: string;
  readonly lines: number;
}

/** What every call can use. */
export interface SoakContext {
  readonly world: World;
  /** The soak guest, compiled once at the start. */
  readonly guestId: string;
  readonly guestSource: string;
  /** A hand-made wasm module that prints "ok\n", registered with Compile{wasm}. */
  readonly helloId: string;
  /** Append runs that exited cleanly. */
  readonly appends: AppendRecord[];
  /** Waits until the daemon has logged one more "trusted keys reloaded" than before `kick` ran. */
  reload(kick: () => Promise<void> | void): Promise<void>;
}

/** The per-call arguments of a kind. */
export interface CallArgs {
  readonly ctx: SoakContext;
  readonly rng: Rng;
  /** Unique number of this call in the soak (tags its input). */
  readonly seq: number;
  /** Which lane runs it: lanes run one call at a time, so a per-lane scratch file is never shared. */
  readonly lane: number;
}

/** One kind of call. */
export interface Kind {
  readonly name: string;
  /** Relative frequency in the random mix. */
  readonly weight: number;
  /** Calls of kinds with the same exclusive group never run at once (rustc runs; key rotations). */
  readonly exclusive?: "compile" | "keys";
  run(args: CallArgs): Promise<Observation>;
}

const OK: Verdict = "ok";

/** FNV-1a 32, as the guest computes it. */
export function fnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}

/** What the guest's `echo` mode prints for `stdin` under SOAK_TAG=`tag`. */
export function expectedEcho(tag: string, stdin: Uint8Array): Buffer {
  const head = Buffer.from(`${tag} ${stdin.length} ${fnv1a32(stdin).toString(16).padStart(8, "0")}\n`);
  return Buffer.concat([head, Buffer.from(stdin).reverse()]);
}

/** What the guest's `emit N` mode prints. */
export function expectedEmit(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** `OUTCOME_EXITED` → `EXITED`, with the exit code when it is not 0. */
function outcomeLabel(r: ExecuteResponse): string {
  const name = Outcome[r.outcome]?.replace(/^OUTCOME_/, "") ?? `outcome ${r.outcome}`;
  return r.outcome === Outcome.OUTCOME_EXITED && r.exitCode !== 0 ? `${name} ${r.exitCode}` : name;
}

/** `CANCELLED`, `PERMISSION_DENIED/POLICY_EXPIRED`: the status name and, when the daemon sent one, its reason. */
export function statusLabel(e: ServiceError): string {
  const name = GrpcStatus[e.code] ?? `status ${e.code}`;
  let reason: string | undefined;
  try {
    reason = errorInfoOf(e.metadata)?.reason;
  } catch {
    reason = "undecodable-details";
  }
  return reason ? `${name}/${reason}` : name;
}

function isServiceError(e: unknown): e is ServiceError {
  return typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "number" && "details" in e;
}

/** Runs `call`; a gRPC failure becomes its label, anything else is rethrown (a bug of the soak itself). */
async function settle<T>(call: Promise<T>): Promise<{ value: T } | { error: ServiceError; label: string }> {
  try {
    return { value: await call };
  } catch (e: unknown) {
    if (isServiceError(e)) return { error: e, label: statusLabel(e) };
    throw e;
  }
}

function unexpected(label: string, detail: string): Observation {
  return { label, verdict: "unexpected", detail };
}

/** A call that must fail with exactly `want` (a status label such as `CANCELLED` or `UNAUTHENTICATED/POLICY_UNKNOWN_KEY`). */
async function expectFailure(call: Promise<unknown>, want: string): Promise<Observation> {
  const r = await settle(call);
  if ("value" in r) return unexpected("OK", `expected ${want}, the call succeeded`);
  return r.label === want ? { label: r.label, verdict: OK } : unexpected(r.label, `expected ${want}: ${r.error.details}`);
}

/** An Execute/stream result that must be `want` (and for EXITED, exit code `exitCode`). */
function expectOutcome(r: ExecuteResponse, want: Outcome, exitCode = 0): Observation | undefined {
  if (r.outcome === want && (want !== Outcome.OUTCOME_EXITED || r.exitCode === exitCode)) return undefined;
  const why = `${r.message} ${r.stderr.toString("utf8").slice(0, 300)}`.trim();
  return unexpected(outcomeLabel(r), `expected ${Outcome[want]}${want === Outcome.OUTCOME_EXITED ? ` ${exitCode}` : ""}: ${why}`);
}

/** Compares output byte for byte; on a mismatch says where the two first differ. */
function sameBytes(label: string, got: Uint8Array, want: Uint8Array): Observation {
  if (Buffer.compare(Buffer.from(got), Buffer.from(want)) === 0) return { label, verdict: OK };
  let i = 0;
  while (i < got.length && i < want.length && got[i] === want[i]) i++;
  return { label, verdict: "wrong-output", detail: `${got.length} bytes instead of ${want.length}; first difference at byte ${i}` };
}

/** The result of a stream read to its end: stdout joined, the finished event, and what is wrong with the event order. */
function fromEvents(events: readonly ExecuteEvent[]): {
  stdout: Buffer;
  finished: ExecuteResponse | undefined;
  shapeError: string | undefined;
} {
  const stdout: Buffer[] = [];
  let finished: ExecuteResponse | undefined;
  let shapeError: string | undefined;
  events.forEach((e, i) => {
    const event = e.event;
    if (i === 0 && event?.$case !== "started") shapeError = `first event is ${event?.$case}, not started`;
    if (event?.$case === "stdout") stdout.push(event.value);
    if (event?.$case === "finished") {
      if (i !== events.length - 1) shapeError = "finished is not the last event";
      finished = event.value;
    }
  });
  if (!finished) shapeError ??= "no finished event";
  return { stdout: Buffer.concat(stdout), finished, shapeError };
}

function echoInput(rng: Rng, tag: string): Buffer {
  return Buffer.concat([Buffer.from(`${tag}|`), rng.bytes(rng.int(STDIN_BYTES.min, STDIN_BYTES.max))]);
}

function guestRun(ctx: SoakContext, fields: Partial<ExecuteRequest>): ExecuteRequest {
  return executeRequest({ target: moduleTarget(ctx.guestId), ...fields });
}

/** An echo run: distinct stdin, checked byte for byte. */
async function echo({ ctx, rng, seq }: CallArgs): Promise<Observation> {
  const tag = `echo-${seq}`;
  const stdin = echoInput(rng, tag);
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS });
  const r = await settle(ctx.world.client.execute(guestRun(ctx, { stdin, args: ["echo"], env: new Map([["SOAK_TAG", tag]]), policy })));
  if ("error" in r) return unexpected(r.label, r.error.details);
  return expectOutcome(r.value, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", r.value.stdout, expectedEcho(tag, stdin));
}

/** The same over StreamOutput, read as fast as it comes. */
async function echoStream({ ctx, rng, seq }: CallArgs): Promise<Observation> {
  const tag = `stream-${seq}`;
  const stdin = echoInput(rng, tag);
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS });
  const r = await settle(ctx.world.client.stream(guestRun(ctx, { stdin, args: ["echo"], env: new Map([["SOAK_TAG", tag]]), policy })));
  if ("error" in r) return unexpected(r.label, r.error.details);
  const { stdout, finished, shapeError } = fromEvents(r.value.map((t) => t.event));
  if (shapeError || !finished) return unexpected("bad-stream", shapeError ?? "no finished event");
  return expectOutcome(finished, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", stdout, expectedEcho(tag, stdin));
}

/** Execute with `source` (compiled through the cache, which must hit). */
async function executeSource({ ctx, rng, seq }: CallArgs): Promise<Observation> {
  const tag = `source-${seq}`;
  const stdin = echoInput(rng, tag);
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS });
  const r = await settle(
    ctx.world.client.execute(
      executeRequest({ target: sourceTarget(ctx.guestSource), stdin, args: ["echo"], env: new Map([["SOAK_TAG", tag]]), policy }),
    ),
  );
  if ("error" in r) return unexpected(r.label, r.error.details);
  if (r.value.moduleId !== ctx.guestId) return unexpected("other-module", `module ${r.value.moduleId}, compiled once as ${ctx.guestId}`);
  return expectOutcome(r.value, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", r.value.stdout, expectedEcho(tag, stdin));
}

/** Reads the read-only mount, writes and reads back a per-lane file in the writable one. */
async function mounted({ ctx, rng, seq, lane }: CallArgs): Promise<Observation> {
  const tag = `mounted-${seq}`;
  const stdin = echoInput(rng, tag);
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS, mounts: ctx.world.roRwMounts });
  const r = await settle(
    ctx.world.client.execute(guestRun(ctx, { stdin, args: ["mounted", String(lane)], env: new Map([["SOAK_TAG", tag]]), policy })),
  );
  if ("error" in r) return unexpected(r.label, r.error.details);
  const want = Buffer.concat([
    expectedEcho(tag, stdin),
    Buffer.from(`\nro ${hex8(fnv1a32(ctx.world.roInput))} rw ${hex8(fnv1a32(stdin))}\n`),
  ]);
  return expectOutcome(r.value, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", r.value.stdout, want);
}

/** A guest holding files in both mounts that never ends, stopped by its timeout_ms. */
function timeoutHoldingMounts(mode: "spin" | "sleep") {
  return async ({ ctx, rng, lane }: CallArgs): Promise<Observation> => {
    const policy = ctx.world.policy({ timeoutMs: rng.int(SHORT_TIMEOUT_MS.min, SHORT_TIMEOUT_MS.max), mounts: ctx.world.roRwMounts });
    const r = await settle(ctx.world.client.execute(guestRun(ctx, { args: [mode, String(lane)], policy })));
    if ("error" in r) return unexpected(r.label, r.error.details);
    return expectOutcome(r.value, Outcome.OUTCOME_TIMEOUT) ?? { label: "TIMEOUT", verdict: OK };
  };
}

/** A unary Execute of a never-ending guest holding mounts, ended by the client's deadline. */
async function deadlineHoldingMounts({ ctx, rng, lane }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS, mounts: ctx.world.roRwMounts });
  const deadline = Date.now() + rng.int(DEADLINE_MS.min, DEADLINE_MS.max);
  return expectFailure(
    ctx.world.client.execute(guestRun(ctx, { args: [rng.pick(["spin", "sleep"]), String(lane)], policy }), { deadline }),
    "DEADLINE_EXCEEDED",
  );
}

/** A call whose deadline has already passed when it is sent. */
async function deadlinePassed({ ctx, lane }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS, mounts: ctx.world.roRwMounts });
  return expectFailure(
    ctx.world.client.execute(guestRun(ctx, { args: ["spin", String(lane)], policy }), { deadline: Date.now() - 1000 }),
    "DEADLINE_EXCEEDED",
  );
}

/** A raw call as far as its ending goes. */
interface RawCall {
  cancel(): void;
  on(event: "status", listener: (s: { code: number; details: string; metadata: Metadata }) => void): unknown;
}

/**
 * Waits for a raw call's final status and, for a stream, for its end: grpc-js reports the status as soon
 * as the trailers arrive, which can be before a paused reader has taken every message.
 */
function statusOf(call: RawCall, stream?: ClientReadableStream<ExecuteEvent>): Promise<ServiceError> {
  const status = new Promise<ServiceError>((resolve) =>
    call.on("status", (s) => resolve(Object.assign(new Error(s.details), s) as ServiceError)),
  );
  if (!stream) return status;
  const drained = new Promise<void>((resolve) => {
    stream.on("end", () => resolve());
    stream.on("error", () => resolve());
  });
  return Promise.all([status, drained]).then(([s]) => s);
}

/** A never-ending guest holding mounts, cancelled by the client (StreamOutput or unary Execute) after a random delay. */
async function cancelHoldingMounts({ ctx, rng, lane }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS, mounts: ctx.world.roRwMounts });
  const request = guestRun(ctx, { args: [rng.pick(["spin", "sleep"]), String(lane)], policy });
  const delay = rng.int(CANCEL_AFTER_MS.min, CANCEL_AFTER_MS.max);
  const raw = ctx.world.client.raw;
  let call: RawCall;
  if (rng.next() < 0.5) {
    const stream = raw.streamOutput(request);
    stream.on("data", () => undefined);
    stream.on("error", () => undefined);
    call = stream;
  } else {
    call = raw.execute(request, new Metadata(), {}, () => undefined);
  }
  const ended = statusOf(call);
  const timer = setTimeout(() => call.cancel(), delay);
  const s = await ended;
  clearTimeout(timer);
  const label = statusLabel(s);
  return label === "CANCELLED" ? { label, verdict: OK } : unexpected(label, `expected CANCELLED after ${delay} ms: ${s.details}`);
}

/** `trap` (abort → unreachable): OUTCOME_TRAP. */
async function trap({ ctx }: CallArgs): Promise<Observation> {
  const r = await settle(
    ctx.world.client.execute(guestRun(ctx, { args: ["trap"], policy: ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS }) })),
  );
  if ("error" in r) return unexpected(r.label, r.error.details);
  return expectOutcome(r.value, Outcome.OUTCOME_TRAP) ?? { label: "TRAP", verdict: OK };
}

/** A Rust panic: exit 101, this run's message on stderr. */
async function panic({ ctx, seq }: CallArgs): Promise<Observation> {
  const tag = `panic-${seq}`;
  const r = await settle(
    ctx.world.client.execute(
      guestRun(ctx, { args: ["panic"], env: new Map([["SOAK_TAG", tag]]), policy: ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS }) }),
    ),
  );
  if ("error" in r) return unexpected(r.label, r.error.details);
  const bad = expectOutcome(r.value, Outcome.OUTCOME_EXITED, 101);
  if (bad) return bad;
  return r.value.stderr.toString("utf8").includes(`soak panic ${tag}`)
    ? { label: "EXITED 101", verdict: OK }
    : {
        label: "EXITED 101",
        verdict: "wrong-output",
        detail: `stderr lacks this run's panic message: ${r.value.stderr.toString("utf8").slice(0, 200)}`,
      };
}

/** A Vec growing past the policy's memory limit: OUTCOME_MEMORY_LIMIT. */
async function memoryBomb({ ctx }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS, memoryLimitBytes: MEMBOMB_LIMIT_BYTES });
  const r = await settle(ctx.world.client.execute(guestRun(ctx, { args: ["membomb"], policy })));
  if ("error" in r) return unexpected(r.label, r.error.details);
  return expectOutcome(r.value, Outcome.OUTCOME_MEMORY_LIMIT) ?? { label: "MEMORY_LIMIT", verdict: OK };
}

/** Endless stdout: OUTCOME_OUTPUT_LIMIT with exactly the cap kept. */
async function flood({ ctx }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS, maxOutputBytes: FLOOD_CAP_BYTES });
  const r = await settle(ctx.world.client.execute(guestRun(ctx, { args: ["flood"], policy })));
  if ("error" in r) return unexpected(r.label, r.error.details);
  return (
    expectOutcome(r.value, Outcome.OUTCOME_OUTPUT_LIMIT) ?? sameBytes("OUTPUT_LIMIT", r.value.stdout, Buffer.alloc(FLOOD_CAP_BYTES, "f"))
  );
}

/** A StreamOutput flood nobody reads, cancelled after a while: the daemon must not buffer it all. */
async function streamUnread({ ctx, rng }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS, maxOutputBytes: UNREAD_FLOOD_CAP_BYTES });
  const call = ctx.world.client.raw.streamOutput(guestRun(ctx, { args: ["flood"], policy }));
  // No 'data' listener: the stream stays paused, so HTTP/2 flow control stops the daemon's writes.
  call.on("error", () => undefined);
  const ended = statusOf(call);
  const delay = rng.int(UNREAD_CANCEL_AFTER_MS.min, UNREAD_CANCEL_AFTER_MS.max);
  const timer = setTimeout(() => call.cancel(), delay);
  const s = await ended;
  clearTimeout(timer);
  const label = statusLabel(s);
  return label === "CANCELLED" ? { label, verdict: OK } : unexpected(label, `expected CANCELLED after ${delay} ms: ${s.details}`);
}

/** A StreamOutput of a known byte pattern read slowly: every byte must arrive, in order. */
async function streamSlow({ ctx, rng }: CallArgs): Promise<Observation> {
  const n = rng.int(SLOW_STREAM_BYTES.min, SLOW_STREAM_BYTES.max);
  const policy = ctx.world.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS });
  const call: ClientReadableStream<ExecuteEvent> = ctx.world.client.raw.streamOutput(guestRun(ctx, { args: ["emit", String(n)], policy }));
  const events: ExecuteEvent[] = [];
  const pauses = rng.fork();
  call.on("data", (event: ExecuteEvent) => {
    events.push(event);
    call.pause();
    setTimeout(() => call.resume(), pauses.int(SLOW_READ_PAUSE_MS.min, SLOW_READ_PAUSE_MS.max));
  });
  call.on("error", () => undefined);
  const s = await statusOf(call, call);
  if (s.code !== GrpcStatus.OK) return unexpected(statusLabel(s), s.details);
  const { stdout, finished, shapeError } = fromEvents(events);
  if (shapeError || !finished) return unexpected("bad-stream", shapeError ?? "no finished event");
  return expectOutcome(finished, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", stdout, expectedEmit(n));
}

/** What the `deny` guest prints when every forbidden operation was refused. */
const ALL_DENIED = "denied ro_write=true ro_mkdir=true dotdot=true symlink=true\n";

/** Writes to the read-only mount and ways out of the writable one: each refused, each reported as a denial. */
async function guestDenials({ ctx }: CallArgs): Promise<Observation> {
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS, mounts: ctx.world.roRwMounts });
  const r = await settle(ctx.world.client.execute(guestRun(ctx, { args: ["deny"], policy })));
  if ("error" in r) return unexpected(r.label, r.error.details);
  const bad = expectOutcome(r.value, Outcome.OUTCOME_EXITED);
  if (bad) return bad;
  const out = sameBytes("EXITED", r.value.stdout, Buffer.from(ALL_DENIED));
  if (out.verdict !== OK) return { ...out, detail: `${out.detail}: ${r.value.stdout.toString("utf8")}` };
  const ops = r.value.denials.map((d) => `${d.operation} ${d.path}`);
  const roWrite = r.value.denials.some((d) => d.path.includes("new.txt"));
  return roWrite && r.value.denials.length >= DENY_MIN_DENIALS
    ? { label: "EXITED+denials", verdict: OK }
    : { label: "EXITED", verdict: "wrong-output", detail: `denials: ${ops.join(", ") || "none"}` };
}
/** Denials the `deny` guest must get at least: the write and the mkdir on /ro, `..` out of /ro, the symlink out of /rw. */
const DENY_MIN_DENIALS = 4;

/** A key trusted by nobody, for refusals. */
const STRANGER = makeKey("stranger");

/** Requests the daemon must refuse before running anything, each with its status and catalogued reason. */
function refusals(ctx: SoakContext): { name: string; request: ExecuteRequest; want: string }[] {
  const w = ctx.world;
  const now = Math.floor(Date.now() / 1000);
  const good = w.policy({ timeoutMs: NORMAL_TIMEOUT_MS });
  const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]);
  const run = (fields: Partial<ExecuteRequest>): ExecuteRequest => guestRun(ctx, { args: ["echo"], ...fields });
  return [
    { name: "no policy", request: run({}), want: "UNAUTHENTICATED/POLICY_REQUIRED" },
    { name: "unknown key", request: run({ policy: w.policy({}, STRANGER) }), want: "UNAUTHENTICATED/POLICY_UNKNOWN_KEY" },
    {
      name: "bad signature",
      request: run({ policy: { ...good, signature: Buffer.from(good.signature).fill(7, 0, 8) } }),
      want: "UNAUTHENTICATED/POLICY_BAD_SIGNATURE",
    },
    {
      name: "malformed policy",
      request: run({ policy: { policy: garbage, keyId: w.mainKey.id, signature: sign(null, garbage, w.mainKey.privateKey) } }),
      want: "UNAUTHENTICATED/POLICY_MALFORMED",
    },
    { name: "expired", request: run({ policy: w.policy({ expiresAtUnix: now - 3600 }) }), want: "PERMISSION_DENIED/POLICY_EXPIRED" },
    {
      name: "not yet valid",
      request: run({ policy: w.policy({ notBeforeUnix: now + 3600 }) }),
      want: "PERMISSION_DENIED/POLICY_NOT_YET_VALID",
    },
    {
      name: "other module",
      request: run({ policy: w.policy({ moduleId: ctx.helloId }) }),
      want: "PERMISSION_DENIED/POLICY_MODULE_MISMATCH",
    },
    {
      name: "over the ceiling",
      request: run({ policy: w.policy({ timeoutMs: SOAK_MAX_TIMEOUT_MS + 1 }) }),
      want: "PERMISSION_DENIED/POLICY_CEILING_EXCEEDED",
    },
    {
      name: "mount outside the root",
      request: run({ policy: w.policy({ mounts: [{ hostPath: w.paths.outside, guestPath: "/out", writable: true }] }) }),
      want: "PERMISSION_DENIED/POLICY_MOUNT_DENIED",
    },
    {
      name: "bad module id",
      request: executeRequest({ target: moduleTarget("not-hex"), policy: good }),
      want: "INVALID_ARGUMENT/INVALID_MODULE_ID",
    },
    {
      name: "unknown module",
      request: executeRequest({ target: moduleTarget("0".repeat(64)), policy: good }),
      want: "NOT_FOUND/MODULE_NOT_FOUND",
    },
    { name: "no target", request: executeRequest({ policy: good }), want: "INVALID_ARGUMENT/INVALID_REQUEST" },
  ];
}

/** One of the refusals above, over Execute or StreamOutput. */
async function refusal({ ctx, rng }: CallArgs): Promise<Observation> {
  const { request, want } = rng.pick(refusals(ctx));
  const call = rng.next() < 0.5 ? ctx.world.client.execute(request) : ctx.world.client.stream(request);
  return expectFailure(call, want);
}

/** A source that does not type-check: ok=false with rustc's E0308. */
async function compileError({ ctx, seq }: CallArgs): Promise<Observation> {
  const source = `fn main() {\n    let n: u32 = "soak ${seq}";\n    println!("{}", n);\n}\n`;
  const r = await settle(ctx.world.client.compile({ input: { $case: "source", value: source } }));
  if ("error" in r) return unexpected(r.label, r.error.details);
  if (r.value.ok) return unexpected("ok", "a source with a type error compiled");
  return r.value.diagnostics.some((d) => d.code === "E0308")
    ? { label: "ok=false E0308", verdict: OK }
    : {
        label: "ok=false",
        verdict: "wrong-output",
        detail: `diagnostics: ${r.value.diagnostics.map((d) => d.code || d.message).join(", ")}`,
      };
}

/** A source never seen before: a real rustc run, then its module runs. */
async function coldCompile({ ctx, seq }: CallArgs): Promise<Observation> {
  const tag = `cold-${seq}-${Date.now()}`;
  const source = `fn main() {\n    println!("{}", "${tag}");\n}\n`;
  const r = await settle(ctx.world.client.compile({ input: { $case: "source", value: source } }));
  if ("error" in r) return unexpected(r.label, r.error.details);
  if (!r.value.ok)
    return unexpected(
      "ok=false",
      r.value.diagnostics
        .map((d) => d.rendered)
        .join("\n")
        .slice(0, 500),
    );
  if (r.value.cacheHit) return unexpected("cache hit", "a never-seen source came from the cache");
  const run = await settle(
    ctx.world.client.execute(
      executeRequest({ target: moduleTarget(r.value.moduleId), policy: ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS }) }),
    ),
  );
  if ("error" in run) return unexpected(`compiled, run ${run.label}`, run.error.details);
  return expectOutcome(run.value, Outcome.OUTCOME_EXITED) ?? sameBytes("compiled+EXITED", run.value.stdout, Buffer.from(`${tag}\n`));
}

/** The soak guest's source again: a cache hit with the same module id. */
async function cacheHit({ ctx }: CallArgs): Promise<Observation> {
  const r = await settle(ctx.world.client.compile({ input: { $case: "source", value: ctx.guestSource } }));
  if ("error" in r) return unexpected(r.label, r.error.details);
  if (!r.value.ok || !r.value.cacheHit || r.value.moduleId !== ctx.guestId) {
    return unexpected(`ok=${r.value.ok} hit=${r.value.cacheHit}`, `module ${r.value.moduleId}, compiled once as ${ctx.guestId}`);
  }
  return { label: "cache hit", verdict: OK };
}

/** A precompiled module uploaded with Compile{wasm} and run. */
async function wasmUpload({ ctx }: CallArgs): Promise<Observation> {
  const r = await settle(ctx.world.client.compile({ input: { $case: "wasm", value: Buffer.from(helloWasm()) } }));
  if ("error" in r) return unexpected(r.label, r.error.details);
  if (!r.value.ok || r.value.moduleId !== ctx.helloId)
    return unexpected(`ok=${r.value.ok}`, `module ${r.value.moduleId}, registered once as ${ctx.helloId}`);
  const run = await settle(
    ctx.world.client.execute(
      executeRequest({ target: moduleTarget(ctx.helloId), policy: ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS }) }),
    ),
  );
  if ("error" in run) return unexpected(`uploaded, run ${run.label}`, run.error.details);
  return expectOutcome(run.value, Outcome.OUTCOME_EXITED) ?? sameBytes("uploaded+EXITED", run.value.stdout, Buffer.from("ok\n"));
}

/** Appends tagged lines to the shared mount's log, alongside other lanes doing the same. */
async function append({ ctx, rng, seq }: CallArgs): Promise<Observation> {
  const tag = `append-${seq}`;
  const lines = rng.int(APPEND_LINES.min, APPEND_LINES.max);
  const policy = ctx.world.policy({ timeoutMs: NORMAL_TIMEOUT_MS, mounts: ctx.world.sharedMounts });
  const r = await settle(
    ctx.world.client.execute(guestRun(ctx, { args: ["append", String(lines)], env: new Map([["SOAK_TAG", tag]]), policy })),
  );
  if ("error" in r) return unexpected(r.label, r.error.details);
  const bad = expectOutcome(r.value, Outcome.OUTCOME_EXITED);
  if (bad) return bad;
  ctx.appends.push({ tag, lines });
  return sameBytes("EXITED", r.value.stdout, Buffer.from(`appended ${lines}\n`));
}

/** SIGHUP with the key set unchanged: every other call, signed with the main key, must keep working meanwhile. */
async function sighup({ ctx }: CallArgs): Promise<Observation> {
  await ctx.reload(() => void ctx.world.daemon.process.kill("SIGHUP"));
  return { label: "reloaded", verdict: OK };
}

/** Trusts a second key by SIGHUP, runs with it, revokes it by SIGHUP, and must then be refused. */
async function keyRotation({ ctx, seq }: CallArgs): Promise<Observation> {
  const w = ctx.world;
  const tag = `rotated-${seq}`;
  const stdin = Buffer.from(tag);
  const request = (): ExecuteRequest =>
    guestRun(ctx, {
      stdin,
      args: ["echo"],
      env: new Map([["SOAK_TAG", tag]]),
      policy: w.policy({ timeoutMs: NORMAL_TIMEOUT_MS }, w.rotatingKey),
    });
  await ctx.reload(async () => {
    await setRotatingKeyTrusted(w, true);
    w.daemon.process.kill("SIGHUP");
  });
  const trusted = await settle(w.client.execute(request()));
  if ("error" in trusted) return unexpected(`trusted: ${trusted.label}`, trusted.error.details);
  const ran = expectOutcome(trusted.value, Outcome.OUTCOME_EXITED) ?? sameBytes("EXITED", trusted.value.stdout, expectedEcho(tag, stdin));
  if (ran.verdict !== OK) return ran;
  await ctx.reload(async () => {
    await setRotatingKeyTrusted(w, false);
    w.daemon.process.kill("SIGHUP");
  });
  const revoked = await expectFailure(w.client.execute(request()), "UNAUTHENTICATED/POLICY_UNKNOWN_KEY");
  return revoked.verdict === OK ? { label: "trusted, then revoked", verdict: OK } : { ...revoked, label: `revoked: ${revoked.label}` };
}

/** Every kind, with its weight in the mix. */
export const KINDS: readonly Kind[] = [
  { name: "echo", weight: 16, run: echo },
  { name: "echo-stream", weight: 6, run: echoStream },
  { name: "execute-source", weight: 2, run: executeSource },
  { name: "mounted", weight: 8, run: mounted },
  { name: "timeout-spin-mounts", weight: 5, run: timeoutHoldingMounts("spin") },
  { name: "timeout-sleep-mounts", weight: 3, run: timeoutHoldingMounts("sleep") },
  { name: "deadline-mounts", weight: 5, run: deadlineHoldingMounts },
  { name: "deadline-passed", weight: 1, run: deadlinePassed },
  { name: "cancel-mounts", weight: 7, run: cancelHoldingMounts },
  { name: "trap", weight: 3, run: trap },
  { name: "panic", weight: 2, run: panic },
  { name: "memory-bomb", weight: 2, run: memoryBomb },
  { name: "output-flood", weight: 3, run: flood },
  { name: "stream-never-read", weight: 2, run: streamUnread },
  { name: "stream-slow-read", weight: 3, run: streamSlow },
  { name: "guest-denials", weight: 4, run: guestDenials },
  { name: "policy-refusal", weight: 6, run: refusal },
  { name: "compile-error", weight: 1, exclusive: "compile", run: compileError },
  { name: "cold-compile", weight: 1, exclusive: "compile", run: coldCompile },
  { name: "cache-hit", weight: 3, run: cacheHit },
  { name: "wasm-upload", weight: 2, run: wasmUpload },
  { name: "shared-append", weight: 5, run: append },
  { name: "sighup", weight: 2, exclusive: "keys", run: sighup },
  { name: "key-rotation", weight: 1, exclusive: "keys", run: keyRotation },
];
