"""How mtlsd ends HTTP connections that still carry something when it decides to end them: a
drain (SIGTERM) or timeouts.max_connection_age with an HTTP/2 response or an HTTP/1.1 upload
under way, and an upstream that cannot be reached while the client uploads. Each must let the
exchange finish (GOAWAY, Connection: close) and close by lingering, not with a reset that throws
away the end of what the client is owed."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import threading
import time


from clients import client_context
from h2_frames import DATA, END_STREAM, GOAWAY, H2Client as RawH2, frame, goaway_fields
from http_upstream import Reader, read_request
from mtlsd_harness import fmt_addr

WINDOW_UPDATE = 0x8
BIG = os.urandom(1024 * 1024)


class HeldAnswer:
    """An HTTP/1.1 upstream that answers each request with `body` once `go` is set."""

    def __init__(self, body: bytes):
        self.body = body
        self.got = threading.Event()
        self.go = threading.Event()

    def __call__(self, conn) -> None:
        reader = Reader(conn)
        while read_request(reader) is not None:
            self.got.set()
            self.go.wait(30)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)
                             + self.body)
            except OSError:
                return


def raw_h2(daemon, pki, rcvbuf: int = 0) -> RawH2:
    """A frame-level HTTP/2 client (hyper-h2 refuses a response's frames after a GOAWAY)."""
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["h2"])
    raw = socket.socket()
    if rcvbuf:  # before connecting: the window the client's kernel offers follows it
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(20)
    raw.connect(daemon.addr())
    return RawH2(ctx.wrap_socket(raw, server_hostname="localhost"))


def read_stream_1(c: RawH2, *, pause: float = 0.0, on_goaway=None) -> dict:
    """Reads frames to EOF as an ordinary client does: each DATA acknowledged (WINDOW_UPDATE
    for the connection and the stream) as it is read, `pause` seconds per frame."""
    seen = {"body": 0, "ended": False, "goaway": None, "error": None}
    try:
        while (f := c.next_frame()) is not None:
            if f.type == GOAWAY:
                seen["goaway"] = goaway_fields(f)
                if on_goaway:
                    on_goaway()
            if f.type == DATA and f.stream == 1:
                seen["body"] += len(f.payload)
                if f.payload:
                    inc = struct.pack(">I", len(f.payload))
                    c.sock.sendall(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, 1, inc))
                seen["ended"] = seen["ended"] or bool(f.flags & END_STREAM)
            if pause:
                time.sleep(pause)  # the client's pace of reading, not a wait for anything
    except (OSError, ssl.SSLError) as e:
        seen["error"] = repr(e)
    c.sock.close()
    return seen


def test_a_drain_lets_a_slow_http2_reader_have_the_whole_response(serve, pki):
    """The response completes after SIGTERM; the client reads it slowly, acknowledging DATA as
    every client does. A drain used to end the lingering at once: those WINDOW_UPDATEs met a
    closed socket, and the kernel's reset dropped the end of the response."""
    up = HeldAnswer(BIG)
    daemon, _ = serve(up, http={"protocols": ["h2"]}, top={"shutdown": {"drain_timeout": "30s"}})
    c = raw_h2(daemon, pki, rcvbuf=4096)
    c.get(1, "localhost", "/big")
    assert up.got.wait(10)
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGTERM)
    daemon.wait_for_log(lambda l: l.get("msg") == "draining", since=mark)
    up.go.set()
    seen = read_stream_1(c, pause=0.002)
    assert seen["ended"] and seen["body"] == len(BIG), seen
    assert seen["goaway"] is not None and seen["goaway"][1] == 0, seen  # NO_ERROR
    assert daemon.wait_exit() == 0


def test_max_connection_age_lets_an_http2_stream_under_way_finish(serve, pki):
    """At the age the client gets GOAWAY naming its stream, which then finishes; the connection
    ends after it. It used to end at the age with no GOAWAY, the stream cut off."""
    up = HeldAnswer(os.urandom(200 * 1024))
    daemon, _ = serve(up, http={"protocols": ["h2"]},
                      timeouts={"max_connection_age": "1s", "half_close": "20s"})
    c = raw_h2(daemon, pki)
    local = fmt_addr(c.sock.getsockname())
    c.get(1, "localhost", "/held")
    assert up.got.wait(10)
    seen = read_stream_1(c, on_goaway=up.go.set)  # the upstream answers once GOAWAY came
    assert seen["goaway"] == (1, 0), seen
    assert seen["ended"] and seen["body"] == len(up.body), seen
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "max_age", line
    assert line["detail"].startswith("max_age: timeouts.max_connection_age (1s) reached"), line


def https11(daemon, pki) -> ssl.SSLSocket:
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(socket.create_connection(daemon.addr(), 10),
                           server_hostname="localhost")


def upload_then_read(sock: ssl.SSLSocket, pieces: int, *, pace: float,
                     head: bool = True) -> tuple[bytes, str]:
    """POSTs `pieces` pieces of 1,000 bytes, one per `pace` seconds (a client that writes its
    whole body before it reads, as http.client does), then reads to EOF. Without `head`, the
    request head was sent already."""
    if head:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (pieces * 1000))
    error = ""
    try:
        for _ in range(pieces):
            sock.sendall(b"x" * 1000)
            time.sleep(pace)  # the upload's pace, not a wait for anything
    except OSError as e:
        error = f"upload: {e!r}"
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except OSError as e:
        error += f" read: {e!r}"
    return got, error


def test_max_connection_age_lets_an_http11_upload_under_way_finish(serve, pki):
    """The age passes during the upload: the exchange finishes (Connection: close), not read as
    the client's end. It used to be: no response, and the request line blamed the client."""
    def answer_after_body(conn):
        reader = Reader(conn)
        while (req := read_request(reader)) is not None:
            body = b"got %d" % len(req.body)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    daemon, _ = serve(answer_after_body, http={"protocols": ["http/1.1"]},
                      timeouts={"max_connection_age": "1s", "half_close": "20s"})
    with https11(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        got, error = upload_then_read(sock, 20, pace=0.1)  # 2 s, across the age
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"got 20000"), (got[:120], error)
    assert b"connection: close" in got.lower(), got[:200]
    assert error == "", error
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "max_age", line


def test_an_unreachable_upstream_answer_survives_an_upload_longer_than_a_second(
        serve, pki, refused_address):
    """502 at once, while the client is still uploading for 3 s: the lingering close lasts as
    after any HTTP answer (up to timeouts.half_close, 5 s quiet), not the second a refusal's
    alert gets, after which the client's next piece was reset."""
    daemon, _ = serve(upstream=refused_address, http={"protocols": ["http/1.1"]})
    with https11(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        got, error = upload_then_read(sock, 60, pace=0.05)
    assert got.startswith(b"HTTP/1.1 502"), (got[:80], error)
    assert error == "", error
    line = daemon.wait_for_access(client=local)  # the longer lingering keeps the refusal's name
    assert line["result"] == "rejected" and line["reason"] == "upstream_unavailable", line
    assert line["termination"] == "refused", line
    assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                               reason="upstream_unavailable") == 1


def test_max_connection_age_ends_an_upgraded_connection_as_a_byte_relay(serve, pki):
    """After a 101 the connection is a byte relay with no boundary to end at: the age gives both
    sides EOF, as in layer 4, and the access line says it closed gracefully (not cut at the
    half-close bound after the age, as the drain-like end alone left it)."""
    def upgrade_then_wait(conn):
        if read_request(Reader(conn)) is None:
            return
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        try:
            conn.recv_until_eof()
        except OSError:
            pass

    daemon, _ = serve(upgrade_then_wait, http={"protocols": ["http/1.1"]},
                      timeouts={"max_connection_age": "1s", "half_close": "5s"})
    with https11(daemon, pki) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        got = b""
        while chunk := sock.recv(65536):  # until the end the age brings
            got += chunk
    assert got.startswith(b"HTTP/1.1 101"), got[:80]
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "max_age", line
    assert line["detail"].endswith("reached, closed gracefully"), line


def test_a_drain_lets_an_uploading_client_read_its_early_answer(serve, pki):
    """The upstream answered 413 after the request head; the client goes on uploading (it reads
    only once its body is out, as http.client does) while SIGTERM comes. The lingering close
    waits for the client to be quiet, not only for its acknowledgement of the 413: ended while
    the client sent, its next piece met a closed socket and it never read the answer."""
    def answer_early(conn):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n"
                     b"Connection: close\r\n\r\nbig")

    daemon, _ = serve(answer_early, http={"protocols": ["http/1.1"]},
                      top={"shutdown": {"drain_timeout": "30s"}})
    pieces = 40
    with https11(daemon, pki) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (pieces * 1000))
        daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("status") == 413)
        daemon.send_signal(signal.SIGTERM)
        got, error = upload_then_read(sock, pieces, pace=0.02, head=False)
    assert got.startswith(b"HTTP/1.1 413") and got.endswith(b"big"), (got[:80], error)
    assert error == "", error
    assert daemon.wait_exit() == 0
