import { expect } from "chai";
import { ExecuteRequest } from "../../src/gen/grpc/sandbox/v1/sandbox.js";
import { executeRequest } from "../../src/grpc/client.js";
import { executeRequestFieldBudget, scanCompileRequest, scanExecuteRequest } from "../../src/grpc/request-scan.js";
import { MAX_OTHER_REQUEST_FIELDS } from "../../src/limits.js";
import { executeRequestDecoder, executeInputFrom } from "../../src/grpc/translate.js";
import type { RequestLimits } from "../../src/request-limits.js";

const UNLIMITED: RequestLimits = { maxArgs: Infinity, maxArgsBytes: Infinity, maxEnvVars: Infinity, maxEnvBytes: Infinity };
const SMALL: RequestLimits = { maxArgs: 3, maxArgsBytes: 10, maxEnvVars: 2, maxEnvBytes: 8 };

function encode(request: Partial<ExecuteRequest>): Uint8Array {
  return ExecuteRequest.encode(executeRequest(request)).finish();
}

/** A length-delimited field: tag byte, one-byte length, payload. */
function ld(tag: number, payload: readonly number[]): number[] {
  return [tag, payload.length, ...payload];
}

const ARG = (text: string): number[] => ld(0x22, [...Buffer.from(text)]);
/** ExecuteRequest.env entry (field 5) holding the given raw entry bytes. */
const ENTRY = (inner: readonly number[]): number[] => ld(0x2a, inner);
const KEY = (text: string): number[] => ld(0x0a, [...Buffer.from(text)]);
const VALUE = (text: string): number[] => ld(0x12, [...Buffer.from(text)]);
/** An end-group tag (field 1, wire type 4): the generated decoders stop a message there. */
const END_GROUP = 0x0c;

describe("ExecuteRequest wire scan (args and env caps before decoding)", function () {
  it("measures what the decoder would decode: args count and bytes, env entries and key+value bytes", function () {
    const bytes = encode({
      target: { $case: "moduleId", value: "m" },
      args: ["a", "", "ünï"],
      env: new Map([
        ["K", "v"],
        ["EMPTY", ""],
      ]),
      stdin: Buffer.from("ignored"),
      policy: { policy: Buffer.from("p"), keyId: "k", signature: Buffer.from("s") },
    });
    const { shape, refused } = scanExecuteRequest(bytes, UNLIMITED);
    expect(refused).to.equal(undefined);
    // Fields: target, stdin, 3 args, 2 entries of 3 fields each, the policy and its 3 fields.
    expect(shape).to.deep.equal({ fields: 14, args: 3, argsBytes: 1 + 0 + Buffer.byteLength("ünï"), envVars: 2, envBytes: 2 + 5 });
  });

  it("refuses one arg over the count cap, and one byte over the bytes cap", function () {
    expect(scanExecuteRequest(encode({ args: ["a", "b", "c"] }), SMALL).refused).to.equal(undefined);
    expect(scanExecuteRequest(encode({ args: ["a", "b", "c", "d"] }), SMALL).refused?.reason).to.equal("ARGS_TOO_LARGE");
    expect(scanExecuteRequest(encode({ args: ["12345", "67890"] }), SMALL).refused).to.equal(undefined);
    expect(scanExecuteRequest(encode({ args: ["12345", "678901"] }), SMALL).refused?.reason).to.equal("ARGS_TOO_LARGE");
  });

  it("refuses one env var over the count cap, and one byte of keys and values over the bytes cap", function () {
    expect(
      scanExecuteRequest(
        encode({
          env: new Map([
            ["A", ""],
            ["B", ""],
          ]),
        }),
        SMALL,
      ).refused,
    ).to.equal(undefined);
    expect(
      scanExecuteRequest(
        encode({
          env: new Map([
            ["A", ""],
            ["B", ""],
            ["C", ""],
          ]),
        }),
        SMALL,
      ).refused?.reason,
    ).to.equal("ENV_TOO_LARGE");
    expect(scanExecuteRequest(encode({ env: new Map([["KEY", "VALUE"]]) }), SMALL).refused).to.equal(undefined);
    expect(scanExecuteRequest(encode({ env: new Map([["KEY", "VALUES"]]) }), SMALL).refused?.reason).to.equal("ENV_TOO_LARGE");
  });

  it("stops at the first excess: 60 million args cost it a few fields, not a walk of 120 MB", function () {
    const bytes = Buffer.alloc(120_000_000);
    for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x22;
    const started = performance.now();
    const { shape, refused } = scanExecuteRequest(bytes, SMALL);
    expect(refused?.reason).to.equal("ARGS_TOO_LARGE");
    expect(shape.args).to.equal(SMALL.maxArgs + 1);
    expect(performance.now() - started).to.be.below(50);
  });

  it("counts args smuggled after an end-group tag inside an env entry, which the decoder resumes from and decodes", function () {
    // The entry claims to span the args, but the decoder leaves it at the end-group tag and reads them at top level.
    const bytes = Uint8Array.from(ENTRY([...KEY("K"), END_GROUP, ...ARG("1"), ...ARG("2"), ...ARG("3"), ...ARG("4")]));
    expect(ExecuteRequest.decode(bytes).args).to.have.length(4);
    const { shape, refused } = scanExecuteRequest(bytes, SMALL);
    expect(shape.args).to.equal(4);
    expect(refused?.reason).to.equal("ARGS_TOO_LARGE");
  });

  it("counts env entries smuggled the same way through a SignedPolicy", function () {
    const entries = [1, 2, 3].flatMap((i) => ENTRY([...KEY(`K${i}`), ...VALUE("v")]));
    const bytes = Uint8Array.from(ld(0x32, [...ld(0x12, [...Buffer.from("key")]), END_GROUP, ...entries]));
    expect(ExecuteRequest.decode(bytes).env.size).to.equal(3);
    expect(scanExecuteRequest(bytes, SMALL).refused?.reason).to.equal("ENV_TOO_LARGE");
  });

  it("never counts less than the decoder decodes, over 5,000 random messages", function () {
    const random = seeded(0x5eed);
    let decoded = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = Uint8Array.from(randomMessage(random, 2));
      let message: ExecuteRequest;
      try {
        message = ExecuteRequest.decode(bytes);
      } catch {
        continue; // malformed: the decoder refuses it, so there is nothing to under-count
      }
      decoded++;
      const { shape } = scanExecuteRequest(bytes, UNLIMITED);
      const context = Buffer.from(bytes).toString("hex");
      expect(shape.args, context).to.equal(message.args.length);
      expect(shape.argsBytes, context).to.equal(message.args.reduce((n, a) => n + Buffer.byteLength(a), 0));
      expect(shape.envVars, context).to.be.at.least(message.env.size);
      let envBytes = 0;
      for (const [k, v] of message.env) envBytes += Buffer.byteLength(k) + Buffer.byteLength(v);
      expect(shape.envBytes, context).to.be.at.least(envBytes);
    }
    expect(decoded, "enough random messages decode to make the comparison mean something").to.be.above(1_000);
  });

  it("refuses more fields than a request within the caps can hold, wherever they hide: INVALID_REQUEST", function () {
    const budget = executeRequestFieldBudget(SMALL);
    const repeated = (field: readonly number[], n: number): Uint8Array => Uint8Array.from(Array.from({ length: n }, () => field).flat());
    const cases: Array<[string, Uint8Array]> = [
      ["unknown varint fields", repeated([0x78, 0], budget + 1)],
      ["empty stdin fields (each one a Buffer to the decoder)", repeated([0x1a, 0], budget + 1)],
      ["fields inside one group", Uint8Array.from([0x7b, ...repeated([0x78, 0], budget), 0x7c])],
      [
        "fields inside the SignedPolicy",
        Uint8Array.from([0x32, 0x80 | ((budget * 2) & 0x7f), (budget * 2) >> 7, ...repeated([0x78, 0], budget)]),
      ],
    ];
    for (const [what, bytes] of cases) {
      const { refused } = scanExecuteRequest(bytes, SMALL);
      expect(refused?.reason, what).to.equal("INVALID_REQUEST");
      expect(refused?.message, what).to.contain(`more than ${budget} protobuf fields`);
    }
    expect(scanExecuteRequest(repeated([0x78, 0], budget), SMALL).refused).to.equal(undefined);
  });

  it("bounds a CompileRequest to MAX_OTHER_REQUEST_FIELDS fields", function () {
    const fields = (n: number): Uint8Array => Uint8Array.from(Array.from({ length: n }, () => [0x0a, 0]).flat());
    expect(scanCompileRequest(fields(MAX_OTHER_REQUEST_FIELDS)).refused).to.equal(undefined);
    expect(scanCompileRequest(fields(MAX_OTHER_REQUEST_FIELDS + 1)).refused?.reason).to.equal("INVALID_REQUEST");
  });

  it("the server's decoder refuses over the caps without decoding, and the handler's translation throws that refusal", function () {
    const decode = executeRequestDecoder((b) => ExecuteRequest.decode(b), SMALL);
    const request = decode(Buffer.from(encode({ target: { $case: "moduleId", value: "m" }, args: ["a", "b", "c", "d"] })));
    expect(() => executeInputFrom(request))
      .to.throw()
      .with.property("reason", "ARGS_TOO_LARGE");
    const fine = decode(Buffer.from(encode({ target: { $case: "moduleId", value: "m" }, args: ["a"] })));
    expect(executeInputFrom(fine).args).to.deep.equal(["a"]);
  });
});

/** A small deterministic PRNG (mulberry32), so a failure reproduces. */
function seeded(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/** Random fields mixing the ones that matter with every wire type, stray end-group and zero tags, and nesting. */
function randomMessage(random: (n: number) => number, depth: number): number[] {
  const out: number[] = [];
  const fields = 1 + random(8);
  for (let i = 0; i < fields; i++) {
    const word = (): number[] => [...Buffer.from("abcdefgh".slice(0, random(6)))];
    switch (random(depth > 0 ? 12 : 9)) {
      case 0:
      case 1:
        out.push(...ld(0x22, word()));
        break; // an arg
      case 2:
        out.push(...ld(0x0a, word()));
        break; // module_id, or an entry's key
      case 3:
        out.push(...ld(0x12, word()));
        break; // source, or an entry's value
      case 4:
        out.push(0x08 + 8 * random(8), random(200) & 0x7f);
        break; // some varint field
      case 5:
        out.push(0x0d, 1, 2, 3, 4);
        break; // fixed32
      case 6:
        out.push(END_GROUP);
        break; // stray end-group
      case 7:
        out.push(0x2b, ...ld(0x22, word()), 0x2c);
        break; // a group (field 5, start/end) holding an arg
      case 8:
        if (random(4) === 0) out.push(0);
        break; // a zero tag
      default: {
        const inner = randomMessage(random, depth - 1);
        if (inner.length < 128) out.push(random(2) === 0 ? 0x2a : 0x32, inner.length, ...inner); // env entry or policy
      }
    }
  }
  return out;
}
