import { fileURLToPath } from "node:url";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { loadSync } from "@grpc/proto-loader";
import { expect } from "chai";
import { Mount, Policy } from "../../src/gen/pb/sandbox/v1/sandbox.js";
import { findUnknownField, KNOWN_POLICY_FIELDS, type KnownMessage } from "../../src/policy/policy-fields.js";

const PROTO_ROOT = fileURLToPath(new URL("../../../proto/", import.meta.url));

/** The wire type protobuf uses for each scalar/message type the contract's Policy can hold. */
const WIRE_TYPE_OF: Record<string, WireType> = {
  TYPE_STRING: WireType.LengthDelimited,
  TYPE_BYTES: WireType.LengthDelimited,
  TYPE_MESSAGE: WireType.LengthDelimited,
  TYPE_INT64: WireType.Varint,
  TYPE_UINT64: WireType.Varint,
  TYPE_INT32: WireType.Varint,
  TYPE_UINT32: WireType.Varint,
  TYPE_BOOL: WireType.Varint,
  TYPE_ENUM: WireType.Varint,
};

interface ProtoField {
  name: string;
  number: number;
  type: string;
  typeName: string;
}

/** `[number, name, wire type, sub-message fields]` of a message as the .proto declares it. */
function declared(fullName: string): unknown[] {
  const definition = loadSync("sandbox/v1/sandbox.proto", { includeDirs: [PROTO_ROOT], keepCase: true });
  const type = (definition[fullName] as { type: { field: ProtoField[] } }).type;
  return type.field.map((f) => [
    f.number,
    f.name,
    WIRE_TYPE_OF[f.type],
    f.type === "TYPE_MESSAGE" ? declared(`sandbox.v1.${f.typeName.replace(/^.*\./, "")}`) : undefined,
  ]);
}

function known(message: KnownMessage): unknown[] {
  return [...message.fields].map(([number, f]) => [number, f.name, f.wireType, f.message ? known(f.message) : undefined]);
}

const policy = (): Uint8Array =>
  Policy.encode(
    Policy.fromPartial({
      policyId: "p",
      expiresAtUnix: 2_000_000_000,
      mounts: [
        { hostPath: "/srv/a", guestPath: "/a", writable: false },
        { hostPath: "/srv/b", guestPath: "/b", writable: true },
      ],
      timeoutMs: 1000,
      network: true,
      allowedHosts: ["https://api.example.com", "https://*.example.org"],
      maxWriteBytes: 4096,
      maxHttpRequests: 3,
      maxHttpResponseBytes: 4096,
      httpTimeoutMs: 500,
    }),
  ).finish();

describe("policy fields this daemon knows", function () {
  it("are exactly the fields proto/sandbox/v1/sandbox.proto declares for Policy and Mount (a new field needs enforcing first)", function () {
    expect(known(KNOWN_POLICY_FIELDS)).to.deep.equal(declared("sandbox.v1.Policy"));
  });

  it("accept a policy with every known field", function () {
    expect(findUnknownField(policy(), KNOWN_POLICY_FIELDS)).to.equal(undefined);
    expect(findUnknownField(new Uint8Array(), KNOWN_POLICY_FIELDS)).to.equal(undefined);
  });

  for (const [wireType, write] of [
    [WireType.Varint, (w: BinaryWriter) => w.uint32(1)],
    [WireType.LengthDelimited, (w: BinaryWriter) => w.string("require-approval")],
    [WireType.Bit32, (w: BinaryWriter) => w.fixed32(7)],
    [WireType.Bit64, (w: BinaryWriter) => w.fixed64(7)],
  ] as const) {
    it(`name an unknown top-level field of wire type ${WireType[wireType]}`, function () {
      const extra = write(new BinaryWriter().tag(99, wireType)).finish();
      const unknown = findUnknownField(Buffer.concat([policy(), extra]), KNOWN_POLICY_FIELDS);
      expect(unknown).to.deep.include({ path: "Policy", fieldNumber: 99 });
      expect(unknown?.message).to.contain("field 99");
    });
  }

  it("name an unknown field inside a mount, with the mount's index", function () {
    const mount = (m: Partial<Mount>, extra?: Uint8Array): Uint8Array =>
      Buffer.concat([Mount.encode(Mount.fromPartial(m)).finish(), extra ?? new Uint8Array()]);
    const writer = new BinaryWriter();
    writer.tag(3, WireType.Varint).int64(2_000_000_000);
    writer.tag(5, WireType.LengthDelimited).bytes(mount({ hostPath: "/srv/a", guestPath: "/a" }));
    writer
      .tag(5, WireType.LengthDelimited)
      .bytes(mount({ hostPath: "/srv/b", guestPath: "/b" }, new BinaryWriter().tag(4, WireType.Varint).bool(true).finish()));
    const unknown = findUnknownField(writer.finish(), KNOWN_POLICY_FIELDS);
    expect(unknown).to.deep.include({ path: "Policy.mounts[1]", fieldNumber: 4 });
    expect(unknown?.message).to.contain("Policy.mounts[1] has field 4");
  });

  it("refuse a known field in another wire type (the generated decoder would skip it)", function () {
    const bytes = new BinaryWriter().tag(7, WireType.LengthDelimited).string("1000").finish();
    const unknown = findUnknownField(bytes, KNOWN_POLICY_FIELDS);
    expect(unknown).to.deep.include({ path: "Policy", fieldNumber: 7 });
    expect(unknown?.message).to.contain("timeout_ms").and.to.contain("expected Varint");
  });

  it("throw on bytes that are not protobuf", function () {
    expect(() => findUnknownField(Uint8Array.of(0x0a, 0x05, 0x61), KNOWN_POLICY_FIELDS)).to.throw();
  });
});
