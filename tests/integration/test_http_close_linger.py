"""HTTP mode: after a complete response, mtlsd closes with a lingering close.

Review: after a response that ends the connection (`Connection: close` from the upstream, or
any response finished during a drain) mtlsd closed its socket at once. A request the client had
pipelined meanwhile was still unread in the kernel, so the close sent RST instead of FIN, and
the kernel dropped what of the response was still in mtlsd's send queue: the client saw the
body cut short and the connection reset, never a close_notify. nginx avoids that with its
lingering close (README, "HTTP mode": close_notify and FIN, then read and discard what the
client sends until it closes) — as mtlsd does already after an early answer.

Made deterministic: the client's receive buffer is small and it stops reading ~1 MiB before
the body's end until mtlsd has logged the request's line (the response is all written: what
mtlsd does next is the close). The part of the body that did not fit the client's receive
buffer is then in mtlsd's send queue when it closes, with the pipelined request unread.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import threading

import pytest

from http_upstream import Reader, read_request
from mtlsd_harness import MtlsdError, client_context, fmt_addr
from upstream import UpstreamConn

BODY_LEN = 8_000_000
PATTERN = bytes(range(256)) * 4096                      # 1 MiB
BODY = (PATTERN * (BODY_LEN // len(PATTERN) + 1))[:BODY_LEN]
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()
PAUSE_BEFORE_END = 1 << 20    # the client stops reading with this much of the body to come
CLIENT_RCVBUF = 64 * 1024     # so most of that waits in mtlsd's send queue, not in ours
TIMEOUT = 20.0
RUNS = 3


class BigAnswers:
    """An upstream handler: answers every request with a 200 of BODY_LEN bytes
    (Content-Length), with `Connection: close` (then closes) or keep-alive. `head_sent` is set
    once the first head went out; `targets` lists the requests it got."""

    def __init__(self, close: bool):
        self.close = close
        self.head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n" % BODY_LEN
                     + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        self.head_sent = threading.Event()
        self.targets: list[str] = []

    def __call__(self, conn: UpstreamConn) -> None:
        reader = Reader(conn)
        while (req := read_request(reader)) is not None:
            self.targets.append(req.target)
            conn.sendall(self.head)
            self.head_sent.set()
            view = memoryview(BODY)
            for off in range(0, BODY_LEN, 256 * 1024):
                conn.sendall(view[off:off + 256 * 1024])
            if self.close:
                break
        conn.shutdown_write()
        try:
            conn.recv_until_eof()   # never reset mtlsd's side ourselves
        except OSError:
            pass


def http11_client(daemon, pki) -> ssl.SSLSocket:
    """Python ssl, ALPN http/1.1, a small receive buffer; a TLS end without close_notify
    raises (suppress_ragged_eofs=False, OP_IGNORE_UNEXPECTED_EOF off)."""
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    host, port = daemon.addr()
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)  # before connect
    raw.settimeout(TIMEOUT)
    raw.connect((host, port))
    sock = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    assert sock.selected_alpn_protocol() == "http/1.1"
    return sock


class Response:
    """What the client read on one connection: the bytes, and how the stream ended."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.buf = bytearray()
        self.ended: str | None = None   # "close_notify", or the error that ended it

    def head_end(self) -> int:
        return self.buf.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in self.buf else -1

    def body_len(self) -> int:
        end = self.head_end()
        return 0 if end < 0 else len(self.buf) - end

    def read_some(self, n: int = 16384) -> bool:
        """One recv; False once the stream ended (self.ended says how)."""
        if self.ended:
            return False
        try:
            chunk = self.sock.recv(n)
        except (ssl.SSLError, OSError) as e:   # a reset, or TLS ending without close_notify
            self.ended = f"{type(e).__name__}: {e}"
            return False
        if not chunk:
            self.ended = "close_notify"
            return False
        self.buf += chunk
        return True

    def read_head(self) -> None:
        while self.head_end() < 0:
            assert self.read_some(), f"ended before the response head: {self.ended}"

    def read_body_until(self, n: int) -> None:
        while self.body_len() < n:
            assert self.read_some(), (f"ended after {self.body_len()} of {BODY_LEN} body bytes: "
                                      f"{self.ended}")

    def read_to_end(self) -> None:
        while self.read_some(65536):
            pass

    def check_whole_first_response(self) -> None:
        head = bytes(self.buf[:self.head_end()])
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        got = bytes(self.buf[self.head_end():self.head_end() + BODY_LEN])
        assert len(got) == BODY_LEN, (
            f"response cut short: {len(got)} of {BODY_LEN} body bytes, then {self.ended}")
        assert hashlib.sha256(got).hexdigest() == BODY_SHA256, "the body's bytes differ"
        assert self.ended == "close_notify", f"whole body, but the stream ended by {self.ended}"


def request_line_of(daemon, local: str, path: str, timeout: float) -> bool:
    """Whether mtlsd logged the request line of `path` on `local`'s connection (the response is
    all written) within `timeout`."""
    try:
        daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("client") == local
                            and l.get("path") == path, timeout=timeout)
        return True
    except MtlsdError:
        return False


def pause_until_the_response_is_written(daemon, r: Response, local: str) -> None:
    """Reads to PAUSE_BEFORE_END bytes before the body's end, then stops reading until mtlsd
    has written the whole response (its request line); if what is left does not fit the
    buffers between us, takes another 64 KiB at a time until it does."""
    r.read_body_until(BODY_LEN - PAUSE_BEFORE_END)
    while not request_line_of(daemon, local, "/1", timeout=1.0):
        r.read_body_until(min(BODY_LEN, r.body_len() + 65536))
        if r.body_len() >= BODY_LEN:
            assert request_line_of(daemon, local, "/1", timeout=5.0), "no request line for /1"
            break


@pytest.fixture
def big_http(serve):
    def start(close: bool, top: dict | None = None):
        answers = BigAnswers(close)
        daemon, up = serve(answers, http={"protocols": ["http/1.1"]}, top=top)
        return daemon, up, answers
    return start


@pytest.mark.parametrize("run", range(RUNS))
def test_a_pipelined_request_does_not_reset_a_connection_close_response(big_http, pki, run):
    """The upstream answers GET /1 with 8 MB and `Connection: close`; the client pipelines
    GET /2 once the answer has begun, before reading the rest. It must get all 8,000,000 body
    bytes and a clean TLS close (close_notify), and GET /2 never goes up."""
    daemon, up, answers = big_http(close=True)
    with http11_client(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        r = Response(sock)
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r.read_head()                      # the upstream has begun answering
        assert answers.head_sent.wait(5)  # set just after its sendall, maybe after we read
        assert not request_line_of(daemon, local, "/1", timeout=0), "the answer is not in flight"
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        pause_until_the_response_is_written(daemon, r, local)
        r.read_to_end()
    r.check_whole_first_response()
    assert answers.targets == ["/1"], answers.targets
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "accepted", line


@pytest.mark.parametrize("run", range(RUNS))
def test_a_request_pipelined_during_a_drain_does_not_reset_the_response(big_http, pki, run):
    """Keep-alive this time: SIGTERM comes while the 8 MB answer to GET /1 is in flight, and
    the client's pipelined GET /2 arrives during the drain. The client still gets the whole
    first response and a clean close (close_notify); mtlsd then exits 0."""
    daemon, up, answers = big_http(close=False, top={"shutdown": {"drain_timeout": "60s"}})
    with http11_client(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        r = Response(sock)
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r.read_head()
        assert answers.head_sent.wait(5)  # set just after its sendall, maybe after we read
        mark = daemon.log_mark()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait_for_log(lambda l: l.get("msg") == "draining", since=mark)
        assert not request_line_of(daemon, local, "/1", timeout=0), "the answer is not in flight"
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        pause_until_the_response_is_written(daemon, r, local)
        r.read_to_end()
    r.check_whole_first_response()
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "accepted", line
    assert daemon.wait_exit(10) == 0
