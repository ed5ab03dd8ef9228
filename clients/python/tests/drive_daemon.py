"""Drives a real sandboxd through sandboxd_client. Usage: drive_daemon.py SOCKET KEY.key
Prints one JSON object of what it saw; exits 1 with {"error": ...} on any failure."""
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sandboxd_client import Client, SandboxdError, policy, sign_policy  # noqa: E402

ECHO = r'''
use std::io::Read;
fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    eprintln!("note on stderr");
    println!("{} {:?} {}", input.trim(), args, std::env::var("GREETING").unwrap_or_default());
}
'''
BIG = 'fn main() { print!("{}", "x".repeat(6 * 1024 * 1024)); }'


def main(socket_path, key_file):
    out = {}
    with Client(socket_path) as sandboxd:
        info = sandboxd.info()
        out["info"] = {"version": info.version, "keys": list(info.trusted_key_ids), "toolchain": info.toolchain.available}
        broken = sandboxd.compile("fn main() { let x: i32 = \"a\"; }")
        out["broken"] = {"ok": broken.ok, "codes": [d.code for d in broken.diagnostics]}
        compiled = sandboxd.compile(ECHO)
        signed = sign_policy(policy("py-test", expires_in_s=600, module_id=compiled.module_id), key_file)
        result = sandboxd.run(module_id=compiled.module_id, stdin=b"ctx", args=["a1"], env={"GREETING": "hi"}, policy=signed)
        out["run"] = {"exit": result.exit_code if result.HasField("exit_code") else None, "stdout": result.stdout.decode(), "stderr": result.stderr.decode()}
        events = [e.WhichOneof("event") for e in sandboxd.stream(module_id=compiled.module_id, policy=signed)]
        out["events"] = events
        # More than gRPC's default 4 MiB receive limit in one Execute response.
        big_id = sandboxd.compile(BIG).module_id
        big_policy = sign_policy(policy("big", expires_in_s=600, module_id=big_id, max_output_bytes=8 * 1024 * 1024), key_file)
        out["bigStdoutBytes"] = len(sandboxd.run(module_id=big_id, policy=big_policy).stdout)
        tampered = sign_policy(policy("py-test", expires_in_s=600), key_file)
        tampered.signature = bytes(64)
        try:
            sandboxd.run(module_id=compiled.module_id, policy=tampered)
            out["tampered"] = "accepted"
        except SandboxdError as e:
            out["tampered"] = {"code": e.code.name, "reason": e.reason}
        try:
            sandboxd.run(module_id=compiled.module_id, policy=sign_policy(policy("other", expires_in_s=600, module_id="0" * 64), key_file))
        except SandboxdError as e:
            out["mismatch"] = {"code": e.code.name, "reason": e.reason, "metadata": sorted(e.metadata)}
    print(json.dumps(out))


try:
    main(sys.argv[1], sys.argv[2])
except Exception as e:  # pylint: disable=broad-except
    print(json.dumps({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}))
    sys.exit(1)
