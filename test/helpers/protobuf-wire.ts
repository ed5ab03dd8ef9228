/**
 * A minimal protobuf wire writer for hostile tests: any field number, any wire
 * type, any bytes in a "string", fields in any order and repeated at will, so a
 * test can send what no generated encoder would produce.
 */

/** Wire types of the protobuf encoding (3 and 4 are the deprecated group markers). */
export const Wire = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;

/** Base-128 varint of a non-negative integer (up to 2^64-1; larger values keep going, as a hostile sender may). */
export function varint(value: number | bigint): number[] {
  let v = BigInt(value);
  if (v < 0n) v = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return out;
}

/** A field's key: field number and wire type. */
export function key(fieldNumber: number, wireType: number): number[] {
  return varint((BigInt(fieldNumber) << 3n) | BigInt(wireType & 7));
}

/** A length-delimited field (string, bytes, embedded message, packed repeated). */
export function lenField(fieldNumber: number, payload: Uint8Array | readonly number[]): Buffer {
  const bytes = Buffer.from(payload as Uint8Array);
  return Buffer.concat([Buffer.from(key(fieldNumber, Wire.LEN)), Buffer.from(varint(bytes.length)), bytes]);
}

/** A varint field (int32/64, uint32/64, bool, enum). */
export function varintField(fieldNumber: number, value: number | bigint): Buffer {
  return Buffer.from([...key(fieldNumber, Wire.VARINT), ...varint(value)]);
}

/** A fixed 32- or 64-bit field with the given little-endian bytes. */
export function fixedField(fieldNumber: number, wireType: typeof Wire.I32 | typeof Wire.I64, bytes: readonly number[]): Buffer {
  return Buffer.from([...key(fieldNumber, wireType), ...bytes]);
}
