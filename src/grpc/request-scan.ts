/**
 * Measures a request on the wire before decoding it. Decoding is where a hostile
 * request under the message size limit does its damage: 60 million empty args
 * (120 MB) cost over half a GB of heap as a JS array, 10 million distinct env
 * keys minutes of event loop, and 60 million empty or unknown fields half a
 * minute of it (the generated decoder allocates a view or a Buffer for each).
 * This walk allocates nothing per field and stops at the first excess: too many
 * args or env bytes, or more fields (at any depth) than a real request has.
 *
 * It moves its cursor exactly as the generated decoders do (same reader, same
 * loop, same stop on an end-group or zero tag, inside the nested env entries and
 * SignedPolicy too), so nothing the decoder would turn into an arg or a variable
 * can hide from it.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { SandboxError } from "../errors/sandbox-error.js";
import { MAX_OTHER_REQUEST_FIELDS } from "../limits.js";
import { argsOverLimit, envOverLimit, type RequestLimits } from "../request-limits.js";

/** Wire tags (field number << 3 | wire type) of ExecuteRequest fields the decoder reads as such. */
const ARGS_TAG = (4 << 3) | WireType.LengthDelimited;
const ENV_TAG = (5 << 3) | WireType.LengthDelimited;
const POLICY_TAG = (6 << 3) | WireType.LengthDelimited;
/** Wire tags of ExecuteRequest.EnvEntry's key and value. */
const ENV_KEY_TAG = (1 << 3) | WireType.LengthDelimited;
const ENV_VALUE_TAG = (2 << 3) | WireType.LengthDelimited;
/** Fields of one env entry: the entry itself, its key, its value. */
const FIELDS_PER_ENV_VAR = 3;
/** Nesting of groups the reader accepts (as @bufbuild/protobuf's skip does). */
const MAX_GROUP_DEPTH = 100;

/** What the walk saw, as far as it went. */
export interface RequestShape {
  /** Fields read, at any depth (unknown ones and those inside groups included). */
  fields: number;
  /** `args` entries. */
  args: number;
  /** Their total payload bytes. */
  argsBytes: number;
  /** `env` entries as sent (a repeated key counts each time). */
  envVars: number;
  /** Payload bytes of their keys and values. */
  envBytes: number;
}

/** The walk's verdict: the shape seen, and the refusal if a cap was exceeded (the walk stopped there). */
export interface RequestScan {
  readonly shape: RequestShape;
  readonly refused: SandboxError | undefined;
}

/** Signals the first excess out of the nested walk. */
class OverLimit {
  constructor(readonly error: SandboxError) {}
}

/** Fields an ExecuteRequest within `limits` may hold: its args, its env entries, and a few others. */
export function executeRequestFieldBudget(limits: RequestLimits): number {
  return limits.maxArgs + FIELDS_PER_ENV_VAR * limits.maxEnvVars + MAX_OTHER_REQUEST_FIELDS;
}

/**
 * Walks a serialized ExecuteRequest and refuses it once `args` or `env` exceeds
 * `limits` (ARGS_TOO_LARGE, ENV_TOO_LARGE) or it holds more fields than such a
 * request can (INVALID_REQUEST). Never throws: on malformed bytes it stops, and
 * everything before that point was within the caps (the decoder then reports
 * the malformation).
 */
export function scanExecuteRequest(bytes: Uint8Array, limits: RequestLimits): RequestScan {
  const walk = new Walk(bytes, executeRequestFieldBudget(limits));
  const { reader, shape } = walk;
  return walk.run(() =>
    walk.message(reader.len, (tag) => {
      if (tag === ARGS_TAG) {
        shape.args++;
        shape.argsBytes += walk.skipLengthDelimited();
        const error = argsOverLimit(shape.args, shape.argsBytes, limits);
        if (error) throw new OverLimit(error);
        return true;
      }
      if (tag === ENV_TAG) {
        walk.message(walk.nestedEnd(), (entryTag) => {
          if (entryTag !== ENV_KEY_TAG && entryTag !== ENV_VALUE_TAG) return false;
          shape.envBytes += walk.skipLengthDelimited();
          return true;
        });
        shape.envVars++;
        const error = envOverLimit(shape.envVars, shape.envBytes, limits);
        if (error) throw new OverLimit(error);
        return true;
      }
      if (tag === POLICY_TAG) {
        // Its fields are all strings and bytes, which move the cursor as skipping does.
        walk.message(walk.nestedEnd(), () => false);
        return true;
      }
      return false;
    }),
  );
}

/** Walks a serialized CompileRequest (two scalar fields) and refuses it beyond MAX_OTHER_REQUEST_FIELDS fields. */
export function scanCompileRequest(bytes: Uint8Array): RequestScan {
  const walk = new Walk(bytes, MAX_OTHER_REQUEST_FIELDS);
  return walk.run(() => walk.message(walk.reader.len, () => false));
}

/** One walk over one message: the reader, what was seen, and the field budget. */
class Walk {
  readonly reader: BinaryReader;
  readonly shape: RequestShape = { fields: 0, args: 0, argsBytes: 0, envVars: 0, envBytes: 0 };

  constructor(
    private readonly bytes: Uint8Array,
    private readonly maxFields: number,
  ) {
    this.reader = new BinaryReader(bytes);
  }

  /** Runs the walk, turning the first excess into the verdict and a malformation into "nothing exceeded". */
  run(walk: () => void): RequestScan {
    try {
      walk();
    } catch (e: unknown) {
      if (e instanceof OverLimit) return { shape: this.shape, refused: e.error };
      // Malformed: the decoder will say so.
    }
    return { shape: this.shape, refused: undefined };
  }

  /**
   * The generated decoders' loop: read a tag, let `field` consume it if it is
   * one it reads, else stop at an end-group or zero tag (the cursor stays there
   * and the enclosing message carries on from it), else skip the field.
   */
  message(end: number, field: (tag: number) => boolean): void {
    const reader = this.reader;
    while (reader.pos < end) {
      const tag = this.tag();
      if (field(tag)) continue;
      if ((tag & 7) === WireType.EndGroup || tag === 0) break;
      this.skip(tag & 7, MAX_GROUP_DEPTH);
    }
  }

  /** Where a nested message that starts at the cursor (with its length prefix) ends, as the decoder computes it. */
  nestedEnd(): number {
    const length = this.reader.uint32();
    return this.reader.pos + length;
  }

  /** Skips a string or bytes payload as reading it would, and returns its length. */
  skipLengthDelimited(): number {
    const length = this.reader.uint32();
    this.advance(length);
    return length;
  }

  /** Reads a tag, counting the field against the budget. */
  private tag(): number {
    if (++this.shape.fields > this.maxFields) {
      throw new OverLimit(
        new SandboxError(
          "INVALID_REQUEST",
          `the request has more than ${this.maxFields} protobuf fields, more than any request within this daemon's limits`,
          {
            metadata: { limit: "fields", max: String(this.maxFields) },
          },
        ),
      );
    }
    return this.reader.uint32();
  }

  /** BinaryReader.skip's cursor moves, without the view it allocates per field (and counting fields inside groups). */
  private skip(wireType: number, depth: number): void {
    const reader = this.reader;
    switch (wireType) {
      case WireType.Varint:
        while (this.bytes[reader.pos++]! & 0x80) {
          // continuation bytes
        }
        this.advance(0);
        return;
      case WireType.Bit64:
        this.advance(8);
        return;
      case WireType.Bit32:
        this.advance(4);
        return;
      case WireType.LengthDelimited:
        this.skipLengthDelimited();
        return;
      case WireType.StartGroup:
        if (depth <= 0) throw new RangeError("maximum recursion depth reached");
        for (;;) {
          const tag = this.tag();
          const fieldNo = tag >>> 3;
          const wt = tag & 7;
          if (fieldNo <= 0 || wt > 5) throw new RangeError("illegal tag");
          if (wt === WireType.EndGroup) return;
          this.skip(wt, depth - 1);
        }
      default:
        throw new RangeError(`cannot skip wire type ${wireType}`);
    }
  }

  /** Moves the cursor `n` bytes on, failing as the reader does past the end. */
  private advance(n: number): void {
    this.reader.pos += n;
    if (this.reader.pos > this.reader.len) throw new RangeError("premature end of message");
  }
}
