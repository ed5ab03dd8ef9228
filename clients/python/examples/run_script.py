"""Compile a Rust script, sign a policy bound to it, and run it with a JSON context, streaming its output.

    clients/python/generate
    PYTHONPATH=clients/python python3 clients/python/examples/run_script.py KEY.key examples/order_total.rs '{"items":[]}'

KEY.key is a private key made by `sandboxctl keygen`; its .pub must be in the daemon's --trusted-keys.
"""
import sys

from sandboxd_client import Client, SandboxdError, policy, sign_policy


def main(key_file, script_file, context):
    with Client() as sandboxd:
        compiled = sandboxd.compile(open(script_file, encoding="utf-8").read())
        if not compiled.ok:
            for d in compiled.diagnostics:
                print(d.rendered or d.message, file=sys.stderr)
            return 1
        signed = sign_policy(policy("example", expires_in_s=300, module_id=compiled.module_id, timeout_ms=5000), key_file)
        try:
            for event in sandboxd.stream(module_id=compiled.module_id, stdin=context.encode(), policy=signed):
                kind = event.WhichOneof("event")
                if kind == "stdout":
                    sys.stdout.buffer.write(event.stdout)
                elif kind == "stderr":
                    sys.stderr.buffer.write(event.stderr)
                elif kind == "finished":
                    finished = event.finished
                    return finished.exit_code if finished.HasField("exit_code") else 1
        except SandboxdError as e:
            print(f"refused: {e.reason}: {e.message}", file=sys.stderr)
            return 1
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
