/**
 * A fast path for encoding StreamOutput's stdout/stderr events, which carry
 * almost all of a stream's bytes. The generated encoder grows a BinaryWriter
 * by doubling and then Buffer.from copies its result: three copies of every
 * output byte. An output event is just a tag, a length and the bytes, so we
 * write the header and copy the payload once. Other events use the generated code.
 */
import { ExecuteEvent } from "../gen/grpc/sandbox/v1/sandbox.js";

/** Protobuf wire type of length-delimited fields (bytes, messages). */
const WIRE_TYPE_LEN = 2;
/** Field numbers of ExecuteEvent's oneof members carrying output (see sandbox.proto). */
const STDOUT_FIELD = 2;
const STDERR_FIELD = 3;
/** A tag byte plus a varint of at most 5 bytes (a length below 2^35). */
const MAX_HEADER_BYTES = 6;

/** Serializes an ExecuteEvent exactly as ExecuteEvent.encode would, copying output payloads once. */
export function serializeExecuteEvent(value: ExecuteEvent): Buffer {
  const event = value.event;
  if (event?.$case !== "stdout" && event?.$case !== "stderr") return Buffer.from(ExecuteEvent.encode(value).finish());
  const data = event.value;
  const field = event.$case === "stdout" ? STDOUT_FIELD : STDERR_FIELD;
  const out = Buffer.allocUnsafe(MAX_HEADER_BYTES + data.byteLength);
  let offset = 0;
  out[offset++] = (field << 3) | WIRE_TYPE_LEN;
  let length = data.byteLength;
  while (length > 0x7f) {
    out[offset++] = (length & 0x7f) | 0x80;
    length = Math.floor(length / 128);
  }
  out[offset++] = length;
  out.set(data, offset);
  return out.subarray(0, offset + data.byteLength);
}
