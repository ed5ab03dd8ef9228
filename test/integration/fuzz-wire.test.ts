/**
 * Property-based fuzzing of the daemon's wire: random, structured-but-hostile and mutated
 * CompileRequest / ExecuteRequest / SignedPolicy / Policy bytes sent raw (no encoder in the way) to a
 * real daemon over its socket. Whatever the bytes, every call must end OK or with a catalogued status
 * (an ErrorInfo reason from src/errors/reasons.ts with its own gRPC code), never INTERNAL, never a hang,
 * and the daemon must stay the same live process.
 */
import { status as GrpcStatus } from "@grpc/grpc-js";
import { expect } from "chai";
import fc from "fast-check";
import { sign } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { SandboxError } from "../../src/errors/sandbox-error.js";
import { REASONS, type Reason } from "../../src/errors/reasons.js";
import { ERROR_DOMAIN, toServiceError } from "../../src/grpc/status.js";
import { startDaemon, type TestDaemon } from "../helpers/daemon.js";
import { fuzzParameters, fuzzTestTimeoutMs } from "../helpers/fuzz.js";
import { helloWasm, register } from "../helpers/hostile.js";
import { fixedField, key, lenField, varint, varintField, Wire } from "../helpers/protobuf-wire.js";
import { rawCallClient, type RawCallClient, type RawCallEnd, type SandboxMethod } from "../helpers/raw-grpc-calls.js";
import { makeKey, tempDir, writePublicKeys, type TestKey } from "../unit/policy-fixtures.js";

/** Longest a fuzzed call may take: far more than any of them needs; hitting it means a hang. */
const CALL_DEADLINE_MS = 20_000;
/** Wall-clock budget of each property (see test/helpers/fuzz.ts). */
const PROPERTY_TIME_MS = 5_000;
/** Largest count of a huge repeated field: big enough to stress decoding, small enough for CI memory (≤ ~1 MB a message). */
const MAX_REPEATED = 50_000;

/** gRPC code each catalogued reason is sent with. */
const CODE_OF_REASON = new Map(Object.keys(REASONS).map((r) => [r, toServiceError(new SandboxError(r as Reason, "")).code]));

/** Throws unless the call ended OK or with a catalogued, non-INTERNAL reason carrying its own code. */
function expectCatalogued(end: RawCallEnd, what: string): void {
  if (end.code === GrpcStatus.OK) return;
  const name = GrpcStatus[end.code] ?? String(end.code);
  const where = `${what} ended ${name}: ${end.details}`;
  expect(end.code, where).to.not.equal(GrpcStatus.INTERNAL);
  expect(end.code, `${where} (a hang)`).to.not.equal(GrpcStatus.DEADLINE_EXCEEDED);
  expect(end.domain, `${where}: no sandboxd ErrorInfo`).to.equal(ERROR_DOMAIN);
  expect(end.reason, where).to.not.equal("INTERNAL");
  expect(CODE_OF_REASON.get(end.reason ?? ""), `${where}: reason ${end.reason} is not catalogued with this code`).to.equal(end.code);
}

// ---- arbitraries ------------------------------------------------------------------------------------

/** Bytes that are not valid UTF-8, or are valid but odd: overlong, surrogates, beyond U+10FFFF, truncated, NUL, BOM. */
const ODD_UTF8: readonly (readonly number[])[] = [
  [0xff],
  [0xfe, 0xff],
  [0xc0, 0x80],
  [0xc0, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
  [0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0x00],
  [0xef, 0xbb, 0xbf],
  [0xe2, 0x80, 0xae],
  [0xf0, 0x9f, 0x92, 0xa9],
];
/** Text fields: ASCII, any Unicode, odd UTF-8 spliced in, or raw bytes. */
const textBytes: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }).map((s) => Buffer.from(s)) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 20 }).map((s) => Buffer.from(s)) },
  {
    weight: 3,
    arbitrary: fc
      .array(
        fc.oneof(
          fc.constantFrom(...ODD_UTF8),
          fc.string({ maxLength: 4 }).map((s) => [...Buffer.from(s)]),
        ),
        { maxLength: 6 },
      )
      .map((parts) => Buffer.from(parts.flat())),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
);
const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 1000n }),
  fc.constantFrom(0n, 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);

/** A field repeated `count` times (a huge repeated field), built without one arbitrary per element. */
function repeated(count: number, field: Buffer): Buffer {
  const out = Buffer.allocUnsafe(count * field.length);
  for (let i = 0; i < count; i++) field.copy(out, i * field.length);
  return out;
}

/** `count` distinct env entries (a map is repeated key/value messages): `K<seed><i as 8 hex digits>=v`, in one buffer. */
function manyEnvEntries(count: number, seed: number): Buffer {
  const prefix = `K${seed.toString(16)}`;
  const keyLength = prefix.length + 8;
  const entry = 2 + keyLength + 3; // key field, value field "v"
  const field = 2 + entry;
  if (keyLength > 127 || entry > 127) throw new Error("env keys must stay one-byte lengths");
  const out = Buffer.allocUnsafe(count * field);
  for (let i = 0; i < count; i++) {
    const at = i * field;
    out[at] = 0x2a; // field 5, LEN
    out[at + 1] = entry;
    out[at + 2] = 0x0a; // field 1 (key), LEN
    out[at + 3] = keyLength;
    out.write(prefix + i.toString(16).padStart(8, "0"), at + 4, "latin1");
    out[at + 4 + keyLength] = 0x12; // field 2 (value), LEN
    out[at + 5 + keyLength] = 1;
    out[at + 6 + keyLength] = 0x76; // "v"
  }
  return out;
}
const hugeCount = fc.integer({ min: 1_000, max: MAX_REPEATED });

/** What the generators need from the running test: the registered module, the mount root, the keys. */
interface FuzzWorld {
  readonly helloId: string;
  readonly mountRoot: string;
  readonly trusted: TestKey;
}

function moduleIdBytes(w: FuzzWorld): fc.Arbitrary<Buffer> {
  const hex = fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 64, maxLength: 64 });
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant<Buffer>(Buffer.from(w.helloId)) },
    { weight: 1, arbitrary: hex.map((s): Buffer => Buffer.from(s)) },
    { weight: 1, arbitrary: fc.constant<Buffer>(Buffer.from(w.helloId.toUpperCase())) },
    { weight: 2, arbitrary: textBytes },
  );
}

/** Mount messages: under the allowed root or not, odd guest paths, odd UTF-8. */
function mountBytes(w: FuzzWorld): fc.Arbitrary<Buffer> {
  const host = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(w.mountRoot, join(w.mountRoot, "a")).map((p) => Buffer.from(p)) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(join(w.mountRoot, "missing"), join(w.mountRoot, "a", ".."), "/etc", "/", "relative", "")
        .map((p) => Buffer.from(p)),
    },
    { weight: 1, arbitrary: textBytes },
  );
  const guest = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom("/data", "/a/b").map((p) => Buffer.from(p)) },
    { weight: 1, arbitrary: fc.constantFrom("/", "", "data", "/data/../x", "//x", "/data\0x").map((p) => Buffer.from(p)) },
    { weight: 1, arbitrary: textBytes },
  );
  return fc.tuple(host, guest, fc.nat(2)).map(([h, g, wr]) => Buffer.concat([lenField(1, h), lenField(2, g), varintField(3, wr)]));
}

/** Policy bytes: every field maybe absent; mostly sane values (so runs happen), else extreme ones, odd text, many mounts. */
function policyBytes(w: FuzzWorld): fc.Arbitrary<Buffer> {
  const now = BigInt(Math.floor(Date.now() / 1000));
  const time = fc.oneof(
    fc.constant(now + 3600n),
    fc.constant(now - 3600n),
    fc.constant(0n),
    u64,
    fc.bigInt({ min: -(2n ** 63n), max: -1n }),
  );
  const sane = <T>(good: fc.Arbitrary<T>, odd: fc.Arbitrary<T>): fc.Arbitrary<T> =>
    fc.oneof({ weight: 3, arbitrary: good }, { weight: 1, arbitrary: odd });
  return fc
    .record(
      {
        id: textBytes.map((b) => lenField(1, b)),
        notBefore: sane(fc.constantFrom(0n, now - 60n), time).map((t) => varintField(2, t)),
        expires: sane(fc.constant(now + 3600n), time).map((t) => varintField(3, t)),
        module: sane(fc.constant(Buffer.from(w.helloId)), moduleIdBytes(w)).map((b) => lenField(4, b)),
        mounts: fc.oneof(
          { weight: 9, arbitrary: fc.array(mountBytes(w), { maxLength: 4 }).map((ms) => Buffer.concat(ms.map((m) => lenField(5, m)))) },
          {
            weight: 1,
            arbitrary: fc.tuple(fc.integer({ min: 100, max: 5_000 }), mountBytes(w)).map(([n, m]) => repeated(n, lenField(5, m))),
          },
        ),
        memory: sane(fc.constantFrom(0n, 1n << 20n, 64n << 20n), u64).map((v) => varintField(6, v)),
        timeout: sane(fc.constantFrom(0n, 1n, 1000n), u64).map((v) => varintField(7, v)),
        output: sane(fc.constantFrom(0n, 1n, 4096n), u64).map((v) => varintField(8, v)),
        network: fc.nat(3).map((v) => varintField(9, v)),
      },
      { requiredKeys: ["expires"] },
    )
    .chain((fields) => fc.shuffledSubarray(Object.values(fields), { minLength: Object.keys(fields).length }))
    .map((parts) => Buffer.concat(parts));
}

/** A SignedPolicy: signed by the trusted key over `policy` (so the daemon decodes it), or not. */
function signedPolicyBytes(w: FuzzWorld, policy: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.oneof(
    {
      weight: 4,
      arbitrary: policy.map((p) =>
        Buffer.concat([lenField(1, p), lenField(2, Buffer.from(w.trusted.id)), lenField(3, sign(null, p, w.trusted.privateKey))]),
      ),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(policy, textBytes, fc.uint8Array({ maxLength: 80 }))
        .map(([p, k, s]) => Buffer.concat([lenField(1, p), lenField(2, k), lenField(3, s)])),
    },
  );
}

/** ExecuteRequest bytes: a target (or two, or none), stdin, args and env (sometimes huge), a policy. */
function executeRequestBytes(w: FuzzWorld): fc.Arbitrary<Buffer> {
  const arg = textBytes.map((b) => lenField(4, b));
  const envKey = fc.oneof(
    { weight: 12, arbitrary: fc.string({ unit: fc.constantFrom(..."ABCXYZ_019"), minLength: 1, maxLength: 8 }).map((k) => Buffer.from(k)) },
    { weight: 2, arbitrary: fc.constantFrom("__proto__", "constructor", "toString", "", "=", "A=B", "PATH").map((k) => Buffer.from(k)) },
    { weight: 2, arbitrary: textBytes },
  );
  const envEntry = fc.tuple(envKey, textBytes).map(([k, v]) => lenField(5, Buffer.concat([lenField(1, k), lenField(2, v)])));
  return fc
    .record({
      target: fc.oneof(
        { weight: 5, arbitrary: moduleIdBytes(w).map((b) => lenField(1, b)) },
        { weight: 2, arbitrary: textBytes.map((b) => lenField(2, b)) },
        { weight: 1, arbitrary: fc.tuple(moduleIdBytes(w), textBytes).map(([m, s]) => Buffer.concat([lenField(1, m), lenField(2, s)])) },
        { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
      ),
      stdin: fc.oneof(
        fc.constant(Buffer.alloc(0)),
        fc.uint8Array({ maxLength: 2048 }).map((b) => lenField(3, b)),
      ),
      args: fc.oneof(
        { weight: 9, arbitrary: fc.array(arg, { maxLength: 8 }).map((a) => Buffer.concat(a)) },
        { weight: 1, arbitrary: fc.tuple(hugeCount, arg).map(([n, a]) => repeated(n, a)) },
      ),
      env: fc.oneof(
        { weight: 9, arbitrary: fc.array(envEntry, { maxLength: 6 }).map((e) => Buffer.concat(e)) },
        {
          weight: 1,
          arbitrary: fc.tuple(fc.integer({ min: 1_000, max: MAX_REPEATED / 5 }), fc.nat()).map(([n, seed]) => manyEnvEntries(n, seed)),
        },
      ),
      policy: fc.oneof(
        { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
        { weight: 4, arbitrary: signedPolicyBytes(w, policyBytes(w)).map((p) => lenField(6, p)) },
      ),
    })
    .chain((fields) => fc.shuffledSubarray(Object.values(fields), { minLength: 5 }))
    .map((parts) => Buffer.concat(parts));
}

/** CompileRequest bytes: wasm (the hello module, maybe damaged, or noise), source text, both, neither. */
function compileRequestBytes(): fc.Arbitrary<Buffer> {
  const hello = Buffer.from(helloWasm());
  return fc.oneof(
    { weight: 2, arbitrary: mutated(fc.constant(hello)).map((b) => lenField(2, b)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((b) => lenField(2, b)) },
    { weight: 2, arbitrary: textBytes.map((b) => lenField(1, b)) },
    {
      weight: 1,
      arbitrary: fc.tuple(textBytes, fc.uint8Array({ maxLength: 64 })).map(([s, b]) => Buffer.concat([lenField(1, s), lenField(2, b)])),
    },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  );
}

/** One damage to a message: cut it, flip bits, splice bytes in or out, change a key's wire type, add junk fields. */
type Mutation =
  | { readonly op: "truncate"; readonly at: number }
  | { readonly op: "flip"; readonly at: number; readonly mask: number }
  | { readonly op: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly op: "delete"; readonly at: number; readonly len: number }
  | { readonly op: "wire-type"; readonly at: number; readonly wire: number }
  | { readonly op: "append"; readonly bytes: Buffer };

/** Fields no well-formed encoder emits: groups, unknown numbers, field 0, wrong wire types for known fields, lengths past the end. */
const junkField: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 9 }), u64).map(([n, v]) => varintField(n, v)),
  fc.tuple(fc.integer({ min: 1, max: 9 }), fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([n, b]) => fixedField(n, Wire.I32, [...b])),
  fc.tuple(fc.integer({ min: 1, max: 9 }), fc.uint8Array({ minLength: 8, maxLength: 8 })).map(([n, b]) => fixedField(n, Wire.I64, [...b])),
  fc.integer({ min: 1, max: 9 }).map((n) => Buffer.from([...key(n, Wire.SGROUP), ...key(n, Wire.EGROUP)])),
  fc.integer({ min: 1, max: 9 }).map((n) => Buffer.from(key(n, Wire.EGROUP))),
  fc.constant(Buffer.from([0x00, 0x01])),
  fc.tuple(fc.integer({ min: 10, max: 536_870_911 }), textBytes).map(([n, b]) => lenField(n, b)),
  fc.tuple(fc.integer({ min: 1, max: 9 }), u64).map(([n, len]) => Buffer.from([...key(n, Wire.LEN), ...varint(len)])),
  fc.constant(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((at): Mutation => ({ op: "truncate", at })),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, mask]): Mutation => ({ op: "flip", at, mask })),
  fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, bytes]): Mutation => ({ op: "insert", at, bytes })),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 16 })).map(([at, len]): Mutation => ({ op: "delete", at, len })),
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })).map(([at, wire]): Mutation => ({ op: "wire-type", at, wire })),
  junkField.map((bytes): Mutation => ({ op: "append", bytes })),
);

function applyMutation(b: Buffer, m: Mutation): Buffer {
  if (m.op === "append") return Buffer.concat([b, m.bytes]);
  if (b.length === 0) return b;
  const at = m.at % b.length;
  switch (m.op) {
    case "truncate":
      return b.subarray(0, at);
    case "flip": {
      const out = Buffer.from(b);
      out[at] = out[at]! ^ m.mask;
      return out;
    }
    case "insert":
      return Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
    case "delete":
      return Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
    case "wire-type": {
      const out = Buffer.from(b);
      out[at] = (out[at]! & ~7) | m.wire;
      return out;
    }
    default: // "append", handled above before an empty buffer returns early
      return m satisfies never;
  }
}

/** Messages from `base`, damaged by one to four mutations. */
function mutated(base: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.tuple(base, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([b, ms]) => ms.reduce(applyMutation, b));
}

// ---- the tests --------------------------------------------------------------------------------------

describe("fuzz: hostile bytes on the wire to a real daemon", function () {
  this.timeout(fuzzTestTimeoutMs(PROPERTY_TIME_MS));
  let tmp: { path: string; remove: () => Promise<void> };
  let daemon: TestDaemon;
  let pid: number;
  let client: RawCallClient;
  let world: FuzzWorld;

  before(async function () {
    tmp = await tempDir("fuzz-wire");
    const keys = join(tmp.path, "keys");
    const mountRoot = join(tmp.path, "mounts");
    await mkdir(keys);
    await mkdir(join(mountRoot, "a"), { recursive: true });
    const trusted = makeKey("fuzz");
    await writePublicKeys(keys, [trusted]);
    // No toolchain: any non-empty source would otherwise cost a real rustc run (~0.5 s); decoding and
    // validation, which are what this fuzzes, come first, and Compile then ends TOOLCHAIN_MISSING.
    daemon = await startDaemon({
      args: ["--trusted-keys", keys, "--allow-mount-root", mountRoot, "--workers", "2", "--rustc", join(tmp.path, "no-rustc")],
    });
    pid = daemon.process.pid!;
    const helloId = await register(daemon, helloWasm());
    client = rawCallClient(daemon.socketPath);
    world = { helloId, mountRoot, trusted };
  });
  afterEach(function () {
    expect(daemon.process.exitCode, `the daemon died; logs:\n${daemon.logs().slice(-4000)}`).to.equal(null);
    expect(daemon.process.signalCode, "the daemon was killed").to.equal(null);
    expect(daemon.process.pid).to.equal(pid);
  });
  after(async function () {
    client?.close();
    await daemon?.stop();
    await tmp?.remove();
  });

  /** Sends `bytes` to each of `methods` at once and checks every ending. */
  async function send(methods: readonly SandboxMethod[], bytes: Buffer): Promise<void> {
    const ends = await Promise.all(methods.map((m) => client.call(m, bytes, CALL_DEADLINE_MS)));
    ends.forEach((end, i) => expectCatalogued(end, `${methods[i]} with ${bytes.length} bytes ${bytes.subarray(0, 48).toString("hex")}`));
    expect(daemon.process.exitCode, `the daemon died on ${bytes.subarray(0, 64).toString("hex")}`).to.equal(null);
  }

  it("random bytes as any request: a catalogued status, never INTERNAL", async function () {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) =>
        send(["Compile", "Execute", "StreamOutput"], Buffer.from(bytes)),
      ),
      fuzzParameters({ timeMs: PROPERTY_TIME_MS }),
    );
  });

  it("structured ExecuteRequests (odd UTF-8, huge repeated args/env/mounts, signed odd policies): catalogued", async function () {
    await fc.assert(
      fc.asyncProperty(executeRequestBytes(world), fc.boolean(), async (bytes, streamed) =>
        send([streamed ? "StreamOutput" : "Execute"], bytes),
      ),
      fuzzParameters({ timeMs: PROPERTY_TIME_MS }),
    );
  });

  it("mutated ExecuteRequests (truncated, bit-flipped, wrong wire types, junk fields): catalogued", async function () {
    await fc.assert(
      fc.asyncProperty(mutated(executeRequestBytes(world)), async (bytes) => send(["Execute", "StreamOutput"], bytes)),
      fuzzParameters({ timeMs: PROPERTY_TIME_MS }),
    );
  });

  it("validly signed Policy bytes that are random or mutated: catalogued (the policy decoder and checks)", async function () {
    const policy = fc.oneof(
      fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
      mutated(policyBytes(world)),
      policyBytes(world),
    );
    const request = signedPolicyBytes(world, policy).map((sp) => Buffer.concat([lenField(1, Buffer.from(world.helloId)), lenField(6, sp)]));
    await fc.assert(
      fc.asyncProperty(request, async (bytes) => send(["Execute"], bytes)),
      fuzzParameters({ timeMs: PROPERTY_TIME_MS }),
    );
  });

  it("CompileRequests (damaged wasm, noise, odd sources, both or neither member) and their mutations: catalogued", async function () {
    await fc.assert(
      fc.asyncProperty(fc.oneof(compileRequestBytes(), mutated(compileRequestBytes())), async (bytes) => send(["Compile"], bytes)),
      fuzzParameters({ timeMs: PROPERTY_TIME_MS }),
    );
  });
});
