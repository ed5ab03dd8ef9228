/**
 * The fields of a signed Policy this daemon knows, and a walk of the policy's
 * protobuf wire bytes that finds any other. A signed policy is read like an
 * X.509 certificate whose every extension is critical: a field added to the
 * contract later (a new restriction, say) must not be silently dropped by an
 * older daemon that then honours the rest of the grant. The generated decoder
 * skips unknown fields without a trace, so the bytes are walked here instead.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** One field this daemon reads: its name, the wire type it must arrive in, and, for a sub-message, that message's fields. */
export interface KnownField {
  readonly name: string;
  readonly wireType: WireType;
  readonly message?: KnownMessage;
}

/** A message's known fields by field number. */
export interface KnownMessage {
  readonly name: string;
  readonly fields: ReadonlyMap<number, KnownField>;
}

/** sandbox.v1.Mount as this daemon enforces it. */
export const KNOWN_MOUNT_FIELDS: KnownMessage = {
  name: "Mount",
  fields: new Map([
    [1, { name: "host_path", wireType: WireType.LengthDelimited }],
    [2, { name: "guest_path", wireType: WireType.LengthDelimited }],
    [3, { name: "writable", wireType: WireType.Varint }],
  ]),
};

/** sandbox.v1.Policy as this daemon enforces it; a test keeps it in step with proto/sandbox/v1/sandbox.proto. */
export const KNOWN_POLICY_FIELDS: KnownMessage = {
  name: "Policy",
  fields: new Map<number, KnownField>([
    [1, { name: "policy_id", wireType: WireType.LengthDelimited }],
    [2, { name: "not_before_unix", wireType: WireType.Varint }],
    [3, { name: "expires_at_unix", wireType: WireType.Varint }],
    [4, { name: "module_id", wireType: WireType.LengthDelimited }],
    [5, { name: "mounts", wireType: WireType.LengthDelimited, message: KNOWN_MOUNT_FIELDS }],
    [6, { name: "memory_limit_bytes", wireType: WireType.Varint }],
    [7, { name: "timeout_ms", wireType: WireType.Varint }],
    [8, { name: "max_output_bytes", wireType: WireType.Varint }],
    [9, { name: "network", wireType: WireType.Varint }],
    [10, { name: "allowed_hosts", wireType: WireType.LengthDelimited }],
    [11, { name: "max_write_bytes", wireType: WireType.Varint }],
    [12, { name: "max_http_requests", wireType: WireType.Varint }],
    [13, { name: "max_http_response_bytes", wireType: WireType.Varint }],
    [14, { name: "http_timeout_ms", wireType: WireType.Varint }],
    [15, { name: "fuel_limit", wireType: WireType.Varint }],
  ]),
};

/** A field the walk could not accept: where it is, its number, and why. */
export interface UnknownField {
  /** Where the field sits, e.g. `Policy` or `Policy.mounts[1]`. */
  readonly path: string;
  readonly fieldNumber: number;
  /** One sentence naming the field and what is wrong with it. */
  readonly message: string;
}

/**
 * The first field in `bytes` (a serialized `message`) that this daemon does
 * not know, or that arrives in another wire type than the one it reads (the
 * generated decoder would skip that too); undefined if there is none.
 * Throws if the bytes are not well-formed protobuf.
 */
export function findUnknownField(bytes: Uint8Array, message: KnownMessage, path = message.name): UnknownField | undefined {
  const reader = new BinaryReader(bytes);
  const seen = new Map<number, number>();
  while (reader.pos < reader.len) {
    const [fieldNumber, wireType] = reader.tag();
    const known = message.fields.get(fieldNumber);
    if (known === undefined) {
      return {
        path,
        fieldNumber,
        message: `${path} has field ${fieldNumber} (wire type ${WireType[wireType] ?? wireType}), which this daemon does not know`,
      };
    }
    if (wireType !== known.wireType) {
      return {
        path,
        fieldNumber,
        message: `${path} field ${fieldNumber} (${known.name}) has wire type ${WireType[wireType] ?? wireType}, expected ${WireType[known.wireType]}`,
      };
    }
    if (known.message) {
      const index = seen.get(fieldNumber) ?? 0;
      seen.set(fieldNumber, index + 1);
      const inner = findUnknownField(reader.bytes(), known.message, `${path}.${known.name}[${index}]`);
      if (inner) return inner;
    } else {
      reader.skip(wireType, fieldNumber);
    }
  }
  return undefined;
}
