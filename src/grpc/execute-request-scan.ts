/**
 * Measures an ExecuteRequest's `args` and `env` on the wire, before decoding it.
 * Decoding is where a hostile request does its damage: 60 million empty args fit
 * in 120 MB of message but cost over half a GB of heap as a JS array, and 10
 * million distinct env keys keep the event loop busy for minutes building an
 * object. This walk allocates nothing per field and stops at the first excess.
 *
 * It moves its cursor exactly as the generated decoder does (same reader, same
 * loop, same stop on an end-group or zero tag, including inside the nested env
 * entries and SignedPolicy), so nothing the decoder would turn into an arg or a
 * variable can hide from it.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { SandboxError } from "../errors/sandbox-error.js";
import { argsOverLimit, envOverLimit, type RequestLimits } from "../request-limits.js";

/** Wire tags (field number << 3 | wire type) of ExecuteRequest fields the decoder reads as such. */
const ARGS_TAG = (4 << 3) | WireType.LengthDelimited;
const ENV_TAG = (5 << 3) | WireType.LengthDelimited;
const POLICY_TAG = (6 << 3) | WireType.LengthDelimited;
/** Wire tags of ExecuteRequest.EnvEntry's key and value. */
const ENV_KEY_TAG = (1 << 3) | WireType.LengthDelimited;
const ENV_VALUE_TAG = (2 << 3) | WireType.LengthDelimited;

/** What the walk saw, as far as it went. */
export interface ExecuteRequestShape {
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
export interface ExecuteRequestScan {
  readonly shape: ExecuteRequestShape;
  readonly refused: SandboxError | undefined;
}

/** Signals the first excess out of the nested walk. */
class OverLimit {
  constructor(readonly error: SandboxError) {}
}

/**
 * Walks a serialized ExecuteRequest and refuses it once `args` or `env` exceeds
 * `limits`. Never throws: on malformed bytes it stops, and everything before
 * that point was within the caps (the decoder then reports the malformation).
 */
export function scanExecuteRequest(bytes: Uint8Array, limits: RequestLimits): ExecuteRequestScan {
  const shape: ExecuteRequestShape = { args: 0, argsBytes: 0, envVars: 0, envBytes: 0 };
  const reader = new BinaryReader(bytes);
  try {
    walkMessage(reader, reader.len, (tag) => {
      if (tag === ARGS_TAG) {
        shape.args++;
        shape.argsBytes += skipLengthDelimited(reader);
        const error = argsOverLimit(shape.args, shape.argsBytes, limits);
        if (error) throw new OverLimit(error);
        return true;
      }
      if (tag === ENV_TAG) {
        walkMessage(reader, nestedEnd(reader), (entryTag) => {
          if (entryTag !== ENV_KEY_TAG && entryTag !== ENV_VALUE_TAG) return false;
          shape.envBytes += skipLengthDelimited(reader);
          return true;
        });
        shape.envVars++;
        const error = envOverLimit(shape.envVars, shape.envBytes, limits);
        if (error) throw new OverLimit(error);
        return true;
      }
      if (tag === POLICY_TAG) {
        // Its fields are all strings and bytes, which move the cursor as skipping does.
        walkMessage(reader, nestedEnd(reader), () => false);
        return true;
      }
      return false;
    });
  } catch (e: unknown) {
    if (e instanceof OverLimit) return { shape, refused: e.error };
    // Malformed: the decoder will say so.
  }
  return { shape, refused: undefined };
}

/**
 * The generated decoders' loop: read a tag, let `field` consume it if it is one
 * it reads, else stop at an end-group or zero tag (the cursor stays there and
 * the enclosing message carries on from it), else skip the field.
 */
function walkMessage(reader: BinaryReader, end: number, field: (tag: number) => boolean): void {
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (field(tag)) continue;
    if ((tag & 7) === WireType.EndGroup || tag === 0) break;
    reader.skip(tag & 7);
  }
}

/** Where a nested message that starts at the cursor (with its length prefix) ends, as the decoder computes it. */
function nestedEnd(reader: BinaryReader): number {
  const length = reader.uint32();
  return reader.pos + length;
}

/** Skips a string or bytes payload as reading it would, and returns its length. */
function skipLengthDelimited(reader: BinaryReader): number {
  const length = reader.uint32();
  reader.pos += length;
  if (reader.pos > reader.len) throw new RangeError("premature end of message");
  return length;
}
