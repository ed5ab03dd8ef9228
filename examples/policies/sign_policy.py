#!/usr/bin/env python3
"""Sign a sandboxd policy without sandboxctl: Ed25519 from the `cryptography`
package plus a hand-rolled protobuf encoding of sandbox.v1.Policy (no protobuf
dependency). Writes the same signed policy file as `sandboxctl policy sign`.

    pip install cryptography
    python3 sign_policy.py KEY.key KEY_ID policy.json [EXPIRES_IN_SECONDS] > signed.json

KEY.key is a PKCS#8 PEM Ed25519 private key (what `sandboxctl keygen` writes).
policy.json is a Policy in JSON, field names in snake_case or camelCase.
EXPIRES_IN_SECONDS sets expires_at_unix to now + that many seconds, as
`sandboxctl policy sign --expires-in` does.
"""
import base64
import json
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Wire types of the protobuf encoding.
VARINT, LEN = 0, 2


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 negatives are sent as their 64-bit two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def int_field(field: int, value: int) -> bytes:
    # proto3 leaves out fields at their default (0 / false) -- so must we, or the bytes differ.
    return tag(field, VARINT) + varint(int(value)) if value else b""


def bytes_field(field: int, value: bytes, always: bool = False) -> bytes:
    return tag(field, LEN) + varint(len(value)) + value if (value or always) else b""


def get(obj: dict, snake: str, default):
    camel = snake.split("_")[0] + "".join(w.title() for w in snake.split("_")[1:])
    return obj.get(snake, obj.get(camel, default))


def encode_mount(m: dict) -> bytes:
    return (bytes_field(1, get(m, "host_path", "").encode())
            + bytes_field(2, get(m, "guest_path", "").encode())
            + int_field(3, bool(get(m, "writable", False))))


def encode_policy(p: dict) -> bytes:
    """Fields in field-number order, defaults omitted: byte-identical to sandboxd's own encoder."""
    out = bytes_field(1, get(p, "policy_id", "").encode())
    out += int_field(2, int(get(p, "not_before_unix", 0)))
    out += int_field(3, int(get(p, "expires_at_unix", 0)))
    out += bytes_field(4, get(p, "module_id", "").encode())
    for m in get(p, "mounts", []):
        out += bytes_field(5, encode_mount(m), always=True)  # repeated messages are sent even when empty
    out += int_field(6, int(get(p, "memory_limit_bytes", 0)))
    out += int_field(7, int(get(p, "timeout_ms", 0)))
    out += int_field(8, int(get(p, "max_output_bytes", 0)))
    out += int_field(9, bool(get(p, "network", False)))
    for host in get(p, "allowed_hosts", []):
        out += bytes_field(10, host.encode(), always=True)  # repeated strings are sent even when empty
    out += int_field(11, int(get(p, "max_write_bytes", 0)))
    out += int_field(12, int(get(p, "max_http_requests", 0)))
    out += int_field(13, int(get(p, "max_http_response_bytes", 0)))
    out += int_field(14, int(get(p, "http_timeout_ms", 0)))
    out += int_field(15, int(get(p, "fuel_limit", 0)))
    return out


def main() -> None:
    key_file, key_id, policy_file = sys.argv[1:4]
    expires_in = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open(key_file, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        sys.exit(f"{key_file} is not an Ed25519 private key")
    with open(policy_file) as f:
        fields = json.load(f)
    if expires_in > 0:
        fields.pop("expiresAtUnix", None)
        fields["expires_at_unix"] = int(time.time()) + expires_in
    policy = encode_policy(fields)
    signed = {
        "policy": base64.b64encode(policy).decode(),
        "keyId": key_id,
        "signature": base64.b64encode(key.sign(policy)).decode(),
    }
    json.dump(signed, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
