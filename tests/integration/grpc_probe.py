"""A gRPC service and client for test_grpc.py: Python grpcio (Debian's python3-grpcio), its code
generated at test time by grpc_tools (python3-grpc-tools) from grpc_probe.proto.

ProbeServer listens h2c (plaintext HTTP/2, what mtlsd's `upstream_protocol: h2c` speaks) and, for
the control runs that bypass mtlsd, also TLS with a required client certificate. It records every
call it sees — the metadata as received, the deadline left, how the call ended — so a test can
assert what crossed the proxy, and signals each step through events instead of timing.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import grpc

from pki import Pki

PROTO = Path(__file__).resolve().parent / "grpc_probe.proto"
MAX_MESSAGE = 8 * 1024 * 1024       # above the 4 MiB default, for the large-message tests
HANG_LIMIT = 30.0                   # Hang's own guard: a call nobody ends still ends
NO_DEADLINE = 1e9                   # seconds; more is what grpcio reports for no deadline
MESSAGE_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE),
                   ("grpc.max_receive_message_length", MAX_MESSAGE)]
_stubs = None


def stubs():
    """(grpc_probe_pb2, grpc_probe_pb2_grpc), generated once per test session."""
    global _stubs
    if _stubs is None:
        out = Path(tempfile.mkdtemp(prefix="mtlsd-probe-"))
        atexit.register(shutil.rmtree, out, True)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
                        f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)],
                       check=True, capture_output=True, timeout=60)
        sys.path.insert(0, str(out))
        _stubs = (importlib.import_module("grpc_probe_pb2"),
                  importlib.import_module("grpc_probe_pb2_grpc"))
    return _stubs


def pattern(n: int) -> bytes:
    """n bytes that are not all alike, so a misplaced chunk changes the digest."""
    block = bytes(range(251))  # a prime length: the pattern does not align with frame sizes
    return (block * (n // len(block) + 1))[:n]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status_code(number: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == number)


@dataclass
class Call:
    """One call as the server saw it."""
    method: str
    metadata: list[tuple[str, str | bytes]]
    time_remaining: Optional[float]         # None: the client sent no deadline
    received: list[int] = field(default_factory=list)   # Chat: seq of each request, in order
    outcome: str = ""   # set when the call ends: "completed" | "cancelled" (ended before the
                        # handler finished: the client cancelled or the deadline passed)
    handler_done: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def values(self, key: str) -> list[str | bytes]:
        """Every value of one metadata key (gRPC keys arrive lower-cased)."""
        return [v for k, v in self.metadata if k == key]

    def done(self) -> None:
        """The handler has produced everything (called just before it returns)."""
        self.handler_done = True

    def on_end(self) -> None:
        """gRPC's termination callback: runs once the call is over, whichever way. Whether the
        handler had finished first is what tells a completed call from a cancelled one
        (is_active() cannot: a request stream ended by RST_STREAM first looks like a
        half-close to the handler)."""
        self.outcome = "completed" if self.handler_done else "cancelled"
        self.ended.set()


class ProbeServer:
    def __init__(self, pki: Optional[Pki] = None):
        pb2, pb2_grpc = stubs()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._new_call = threading.Condition(self._lock)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  options=MESSAGE_OPTIONS)
        pb2_grpc.add_ProbeServicer_to_server(_servicer(self, pb2, pb2_grpc), self.server)
        self.h2c_port = self.server.add_insecure_port("127.0.0.1:0")
        self.tls_port = None
        if pki is not None:  # the control route: the same client straight to the service
            creds = grpc.ssl_server_credentials(
                [(pki.read("server.key"), pki.read("server.crt"))],
                root_certificates=pki.read("ca.crt"), require_client_auth=True)
            self.tls_port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.h2c_port}"

    def begin(self, method: str, context: grpc.ServicerContext) -> Call:
        remaining = context.time_remaining()  # "no deadline" reads as ~2**63 seconds
        call = Call(method, list(context.invocation_metadata()),
                    remaining if remaining < NO_DEADLINE else None)
        if not context.add_callback(call.on_end):
            call.on_end()  # over before the callback could be registered
        with self._lock:
            self.calls.append(call)
            self._new_call.notify_all()
        return call

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[Call]:
        """The first n calls, once they have arrived."""
        with self._lock:
            if not self._new_call.wait_for(lambda: len(self.calls) >= n, timeout):
                raise AssertionError(f"{len(self.calls)} calls arrived, expected {n}")
            return list(self.calls[:n])

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


def _servicer(probe: ProbeServer, pb2, pb2_grpc):
    class Servicer(pb2_grpc.ProbeServicer):
        def Unary(self, request, context):
            call = probe.begin("Unary", context)
            context.send_initial_metadata((("x-probe-initial", "hello"),))
            context.set_trailing_metadata((("x-probe-trailer", "bye"),
                                           ("x-probe-trailer-bin", b"\x00\xff\x00")))
            call.done()
            return pb2.Msg(text=request.text, blob=pattern(request.count),
                           count=len(request.blob), seq=request.seq, digest=sha256(request.blob))

        def Countdown(self, request, context):
            call = probe.begin("Countdown", context)
            for seq in range(request.count):
                yield pb2.Msg(text=f"{request.text}-{seq}", seq=seq)
            call.done()

        def Chat(self, request_iterator, context):
            call = probe.begin("Chat", context)
            try:
                for msg in request_iterator:
                    call.received.append(msg.seq)
                    # count: how many requests the server had when it answered this one
                    yield pb2.Msg(text=msg.text.upper(), seq=msg.seq, count=len(call.received))
            except grpc.RpcError:  # cancelled while the server waited for a request
                return
            # After the client's half-close the server still talks: a proxy must keep the
            # stream open downstream. Sending this fails on a cancelled stream.
            yield pb2.Msg(text="END", seq=-1, count=len(call.received))
            call.done()

        def Hang(self, request, context):
            call = probe.begin("Hang", context)
            call.entered.set()
            call.ended.wait(HANG_LIMIT)
            call.done()
            return pb2.Msg()

        def Fail(self, request, context):
            call = probe.begin("Fail", context)
            context.set_trailing_metadata((("x-probe-reason", request.text),
                                           ("x-probe-reason-bin", b"\x01\x02\x03")))
            call.done()
            context.abort(status_code(request.count), f"probe failed: {request.text}")

    return Servicer()


def tls_channel(pki: Pki, port: int, cert: Optional[str] = "client") -> grpc.Channel:
    """A channel with client certificate `cert` (None: none) to 127.0.0.1:port (server.crt
    names that IP).

    Its own subchannel pool: a test that counts connections or streams must not share one
    with another channel."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca.crt"),
        private_key=pki.read(f"{cert}.key") if cert else None,
        certificate_chain=pki.read(f"{cert}.crt") if cert else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=MESSAGE_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])


def probe_stub(channel: grpc.Channel):
    _, pb2_grpc = stubs()
    return pb2_grpc.ProbeStub(channel)
