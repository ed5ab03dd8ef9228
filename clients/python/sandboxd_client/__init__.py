"""A Python client for sandboxd: compile agent-written Rust and run it under a signed policy.

    from sandboxd_client import Client, policy, sign_policy

    with Client("unix:///run/sandboxd/sandboxd.sock") as sandboxd:
        compiled = sandboxd.compile(source=open("script.rs").read())
        signed = sign_policy(policy("orders", expires_in_s=900, module_id=compiled.module_id), "ci.key")
        result = sandboxd.run(module_id=compiled.module_id, stdin=b'{"items": []}', policy=signed)

The stubs in sandboxd_client/_gen come from proto/ through Debian's protoc (./generate).
Failed calls raise SandboxdError, which carries the catalogued reason of the daemon's
google.rpc.ErrorInfo (README.md, "Errors").
"""
import base64
import json
import os
import time

import grpc

from sandboxd_client._gen.google.rpc import error_details_pb2, status_pb2
from sandboxd_client._gen.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

__all__ = ["Client", "SandboxdError", "policy", "sign_policy", "load_signed_policy", "sandbox_pb2", "DEFAULT_TARGET"]

#: Where the daemon listens unless told otherwise (systemd unit); $SANDBOXD_SOCKET overrides it.
DEFAULT_TARGET = "unix:///run/sandboxd/sandboxd.sock"
#: The daemon sends and receives messages up to 128 MiB; an Execute response carries stdout and
#: stderr whole, far beyond gRPC's default 4 MiB receive limit, so the channel accepts as much.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: The domain of the daemon's ErrorInfo.
ERROR_DOMAIN = "sandboxd"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class SandboxdError(Exception):
    """A call the daemon refused or failed: its gRPC status code, catalogued reason and message."""

    def __init__(self, code, reason, message, metadata=None):
        super().__init__(f"{reason or code.name}: {message}")
        #: grpc.StatusCode, e.g. grpc.StatusCode.UNAUTHENTICATED
        self.code = code
        #: the catalogued reason, e.g. "POLICY_BAD_SIGNATURE"; None when the daemon sent no ErrorInfo
        self.reason = reason
        self.message = message
        #: ErrorInfo metadata (e.g. "install" for TOOLCHAIN_MISSING)
        self.metadata = dict(metadata or {})

    @classmethod
    def from_rpc_error(cls, error):
        """Decodes the google.rpc.Status in the grpc-status-details-bin trailer into a SandboxdError."""
        reason, metadata = None, {}
        trailers = error.trailing_metadata() or ()
        for key, value in trailers:
            if key != _STATUS_DETAILS_KEY:
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                    reason, metadata = info.reason, dict(info.metadata)
        return cls(error.code(), reason, error.details() or "", metadata)


def policy(policy_id, *, expires_in_s, module_id="", mounts=(), memory_limit_bytes=0, timeout_ms=0,
           max_output_bytes=0, max_write_bytes=0, not_before_unix=0):
    """Builds a sandbox.v1.Policy valid from now for expires_in_s seconds.

    mounts: (host_path, guest_path, writable) triples. A limit left at 0 takes the daemon's default.
    """
    if expires_in_s <= 0:
        raise ValueError("expires_in_s must be positive: the daemon refuses a policy without an expiry")
    return sandbox_pb2.Policy(
        policy_id=policy_id,
        not_before_unix=not_before_unix,
        expires_at_unix=int(time.time()) + int(expires_in_s),
        module_id=module_id,
        mounts=[sandbox_pb2.Mount(host_path=h, guest_path=g, writable=w) for (h, g, w) in mounts],
        memory_limit_bytes=memory_limit_bytes,
        timeout_ms=timeout_ms,
        max_output_bytes=max_output_bytes,
        max_write_bytes=max_write_bytes,
    )


def sign_policy(policy_message, private_key, key_id=None):
    """Signs a Policy with an Ed25519 private key (a PEM file path or PEM bytes, as `sandboxctl keygen`
    writes them); key_id defaults to the key file's name without `.key`."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # python3-cryptography

    if isinstance(private_key, (str, os.PathLike)):
        if key_id is None:
            key_id = os.path.basename(os.fspath(private_key)).removesuffix(".key")
        with open(private_key, "rb") as f:
            private_key = f.read()
    if not key_id:
        raise ValueError("key_id is required when the key is not given as a file")
    key = load_pem_private_key(private_key, password=None)
    data = policy_message.SerializeToString()
    return sandbox_pb2.SignedPolicy(policy=data, key_id=key_id, signature=key.sign(data))


def load_signed_policy(path):
    """Reads a signed policy file as `sandboxctl policy sign` writes it."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return sandbox_pb2.SignedPolicy(
        policy=base64.b64decode(doc["policy"]),
        key_id=doc.get("keyId", doc.get("key_id", "")),
        signature=base64.b64decode(doc["signature"]),
    )


class Client:
    """A connection to one daemon. Methods raise SandboxdError when the daemon refuses a call."""

    def __init__(self, target=None, *, options=()):
        target = target or os.environ.get("SANDBOXD_SOCKET") or DEFAULT_TARGET
        if target.startswith("/"):
            target = "unix://" + target
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                *options,
            ],
        )
        self._stub = sandbox_pb2_grpc.SandboxServiceStub(self._channel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._channel.close()

    @staticmethod
    def _call(fn, request, timeout):
        try:
            return fn(request, timeout=timeout)
        except grpc.RpcError as e:
            raise SandboxdError.from_rpc_error(e) from None

    def compile(self, source=None, *, wasm=None, timeout=None):
        """Compiles Rust source (or registers a wasm module). A compile error is a result with ok=False
        and diagnostics, not an exception."""
        if (source is None) == (wasm is None):
            raise ValueError("pass exactly one of source and wasm")
        request = sandbox_pb2.CompileRequest(source=source) if source is not None else sandbox_pb2.CompileRequest(wasm=wasm)
        return self._call(self._stub.Compile, request, timeout)

    @staticmethod
    def _execute_request(module_id, source, stdin, args, env, policy):
        if (module_id is None) == (source is None):
            raise ValueError("pass exactly one of module_id and source")
        request = sandbox_pb2.ExecuteRequest(stdin=stdin, args=list(args), env=dict(env or {}))
        if module_id is not None:
            request.module_id = module_id
        else:
            request.source = source
        if policy is not None:
            request.policy.CopyFrom(policy)
        return request

    def run(self, *, module_id=None, source=None, stdin=b"", args=(), env=None, policy=None, timeout=None):
        """Execute: runs a module (or source) and returns the whole ExecuteResponse. Check
        response.HasField("exit_code"): it is set only when the script exited."""
        return self._call(self._stub.Execute, self._execute_request(module_id, source, stdin, args, env, policy), timeout)

    def stream(self, *, module_id=None, source=None, stdin=b"", args=(), env=None, policy=None, timeout=None):
        """StreamOutput: yields ExecuteEvents (compiling, started, stdout, stderr, denial, finished) as they come."""
        request = self._execute_request(module_id, source, stdin, args, env, policy)
        try:
            yield from self._stub.StreamOutput(request, timeout=timeout)
        except grpc.RpcError as e:
            raise SandboxdError.from_rpc_error(e) from None

    def info(self, timeout=None):
        """The daemon's version, toolchain, limits, trusted key ids, cache and workers."""
        return self._call(self._stub.Info, sandbox_pb2.InfoRequest(), timeout)
