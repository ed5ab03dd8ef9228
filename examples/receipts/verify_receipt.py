#!/usr/bin/env python3
"""Verify a sandboxd receipt without sandboxctl: Ed25519 from the `cryptography`
package plus a hand-rolled decoder of sandbox.v1.Receipt (no protobuf dependency).

    pip install cryptography
    python3 verify_receipt.py RECEIPT_KEY.pub receipt.json

receipt.json is a SignedReceipt in proto3 JSON ({"receipt", "keyId", "signature"}),
or an ExecuteResponse in proto3 JSON that carries one. Prints the receipt as JSON
(digests in hex) and exits 0 if the signature verifies; exits 1 if it does not.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

# sandbox.v1.Receipt: field number -> (name, kind).
FIELDS = {
    1: ("execution_id", "string"), 2: ("module_id", "string"), 3: ("policy_id", "string"),
    4: ("policy_sha256", "bytes"), 5: ("policy_key_id", "string"), 6: ("stdin_sha256", "bytes"),
    7: ("args_env_sha256", "bytes"), 8: ("stdout_sha256", "bytes"), 9: ("stderr_sha256", "bytes"),
    10: ("outcome", "uint"), 11: ("exit_code", "int32"), 12: ("fuel_consumed", "uint"),
    13: ("fuel_limit", "uint"), 14: ("denial_count", "uint"), 15: ("started_at_unix_ms", "uint"),
    16: ("duration_us", "uint"), 17: ("daemon_version", "string"),
}
OUTCOMES = ["UNSPECIFIED", "EXITED", "TRAP", "TIMEOUT", "MEMORY_LIMIT", "OUTPUT_LIMIT", "CANCELLED",
            "COMPILE_ERROR", "FUEL_EXHAUSTED"]


def varint(data: bytes, pos: int):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def decode_receipt(data: bytes) -> dict:
    out, pos = {}, 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire_type = key >> 3, key & 7
        name, kind = FIELDS.get(number, (f"field_{number}", "unknown"))
        if wire_type == 0:
            value, pos = varint(data, pos)
            if kind == "int32" and value >= 1 << 63:
                value -= 1 << 64  # negative int32s are sent as 64-bit two's complement
            out[name] = OUTCOMES[value] if name == "outcome" and value < len(OUTCOMES) else value
        elif wire_type == 2:
            length, pos = varint(data, pos)
            raw, pos = data[pos:pos + length], pos + length
            out[name] = raw.decode() if kind == "string" else raw.hex()
        else:
            raise ValueError(f"unexpected wire type {wire_type} for field {number}")
    return out


def args_env_sha256(args: list, env: dict) -> str:
    """The receipt's args_env_sha256: counts and lengths 4 bytes big-endian, env by its keys' UTF-8 bytes."""
    def u32(n: int) -> bytes:
        return n.to_bytes(4, "big")

    def s(text: str) -> bytes:
        return u32(len(text.encode())) + text.encode()

    data = u32(len(args)) + b"".join(s(a) for a in args)
    data += u32(len(env)) + b"".join(s(k) + s(v) for k, v in sorted(env.items(), key=lambda kv: kv[0].encode()))
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    pub_file, receipt_file = sys.argv[1:3]
    with open(pub_file, "rb") as f:
        key = load_pem_public_key(f.read())
    if not isinstance(key, Ed25519PublicKey):
        sys.exit(f"{pub_file} is not an Ed25519 public key")
    with open(receipt_file) as f:
        signed = json.load(f)
    if isinstance(signed.get("receipt"), dict):  # an ExecuteResponse holding the SignedReceipt
        signed = signed["receipt"]
    receipt = base64.b64decode(signed["receipt"])
    try:
        key.verify(base64.b64decode(signed["signature"]), receipt)
    except InvalidSignature:
        print("the signature does not verify over the receipt bytes with this key", file=sys.stderr)
        sys.exit(1)
    json.dump(decode_receipt(receipt), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
