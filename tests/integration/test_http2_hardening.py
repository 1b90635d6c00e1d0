"""HTTP/2 hardening in `http:` mode, each test the sequence that broke mtlsd before:

- an HTTP/2 client in front of an HTTP/1.1 upstream that answers at once and reads on: a client
  that fills its stream window, sends a few small DATA frames and goes away left the connection
  hanging (its exchange waiting for a wake nobody sent), with both sockets and no access line;
- an h2c upstream whose HPACK block (one field in the table, then one-byte references to it)
  decodes to megabytes: its response head, or its trailers, are bounded like a client's header
  list (64 KiB), the rest never copied;
- an HTTP/2 client's request trailers are a header list of their own: they do not share (and
  lose fields to) the head's 64 KiB, and a trailer section over the limit resets the stream
  rather than going up cut short.

The clients are raw frames over TLS (h2_frames.py) where the test must decide every frame, and
hyper-h2 (h2_client.py) elsewhere; the upstreams are written here so that they send exactly
what the test needs."""

from __future__ import annotations

import os
import struct
import threading

import h2.events
import hpack

from h2_client import H2Client, status_of
from h2_frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM,
                       SETTINGS, _hpack_literal, connect_h2, frame)
from helpers import wait_request_line
from http_upstream import HttpRecorder, Reader
from mtlsd_harness import client_context, fmt_addr
from test_http2_limits import hpack_int
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 10.0
STREAM_WINDOW = 65535
HEAD_LIMIT = 65536
SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"


def status_kb(pid: int, field: str) -> int:
    """A /proc/PID/status field in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


# --- HTTP/2 client, HTTP/1.1 upstream: the connection ends --------------------------------

IDLE = 2.0          # timeouts.idle: ends the session at the latest
RESPONSE_BYTES = 1 << 20


def answer_at_once_then_read():
    """An HTTP/1.1 upstream that answers a request's head at once with a 1 MiB body (written by
    a thread of its own: it blocks once the buffers on the way fill) and meanwhile reads the
    request body. Returns (handler, events): "a" is set once the body holds an "a", "closed"
    when mtlsd closed the connection."""
    events = {"a": threading.Event(), "closed": threading.Event()}

    def handle(conn) -> None:
        reader = Reader(conn)
        if reader.until(b"\r\n\r\n") is None:
            return

        def send() -> None:
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % RESPONSE_BYTES)
                conn.sendall(b"x" * RESPONSE_BYTES)
            except OSError:
                pass
        threading.Thread(target=send, daemon=True).start()
        body = bytearray(reader.buf)
        while True:
            if b"a" in body:
                events["a"].set()
            try:
                data = conn.recv()
            except OSError:
                break
            if not data:
                break
            body += data
        events["closed"].set()
    return handle, events


def test_a_client_gone_mid_upload_ends_its_connection_to_an_http11_upstream(http_serve, pki):
    """The upstream answers the head at once with 1 MiB and reads on; the client (default
    windows, never a WINDOW_UPDATE) takes one stream window of the response, sends DATA "a",
    "b", then "c" with END_STREAM, and closes its TCP connection. The session must end: an
    access line (the idle timeout ends it at the latest), the upstream connection closed.
    Before, two waits of the same stream (body to send, window to open) shared one
    registration, the second left unwoken at the connection's end: no access line ever, the
    client socket in CLOSE-WAIT."""
    handler, seen = answer_at_once_then_read()
    daemon, up, _ = http_serve(handler=handler, http={"protocols": ["h2"]},
                               timeouts={"idle": f"{int(IDLE)}s"})
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    try:
        block = b"".join(_hpack_literal(k, v) for k, v in (
            (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
            (":path", "/upload")))
        client.sock.sendall(frame(HEADERS, END_HEADERS, 1, block))
        got = 0
        while got < STREAM_WINDOW:
            f = client.next_frame()
            assert f is not None, f"closed after {got} response bytes"
            assert not (f.type == RST_STREAM and f.stream == 1), f
            if f.type == DATA and f.stream == 1:
                got += len(f.payload)
        assert got == STREAM_WINDOW, got
        client.sock.sendall(frame(DATA, 0, 1, b"a"))
        assert seen["a"].wait(TIMEOUT), "the upstream never read the body's first byte"
        client.sock.sendall(frame(DATA, 0, 1, b"b"))
        client.sock.sendall(frame(DATA, END_STREAM, 1, b"c"))
    finally:
        client.sock.close()
    line = daemon.wait_for_access(client=local)  # "no access line ever" is the failure
    assert line["client"] == local
    assert seen["closed"].wait(TIMEOUT), "the upstream connection was never closed"


# --- h2c upstream: an HPACK bomb in the response -------------------------------------------

REFERENCES = 12000   # one-byte references: the block stays within one 16 KiB frame


def hpack_bomb() -> bytes:
    """A 4,000-byte field `x-big` added to the decoder's table (literal with incremental
    indexing), then REFERENCES one-byte references to it (0xbe: dynamic index 62, the newest
    entry): 16 KB that decode to some 48 MB by RFC 9113's accounting."""
    value = b"A" * 4000
    return (b"\x40" + hpack_int(5, 7, 0) + b"x-big" + hpack_int(len(value), 7, 0) + value
            + b"\xbe" * REFERENCES)


def bombing_h2c(where: str, body_seen: threading.Event | None = None):
    """A hand-written h2c upstream (raw frames): every request is answered with `:status 200`
    and the bomb in the head itself (`where` == "head") or, after DATA "hello", in the trailers
    ("trailers", sent once `body_seen` is set: the client has the head and the DATA, so the
    trailers cannot overtake them)."""
    def handle(conn) -> None:
        buf = bytearray()

        def exact(n: int) -> bytes | None:
            while len(buf) < n:
                data = conn.recv()
                if not data:
                    return None
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        if exact(24) != b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
            return
        conn.sendall(frame(SETTINGS, 0, 0, b""))
        while True:
            head = exact(9)
            if head is None:
                return
            length = int.from_bytes(head[:3], "big")
            ftype, flags, stream = struct.unpack(">BBI", head[3:])
            payload = exact(length) if length else b""
            if payload is None:
                return
            if ftype == SETTINGS and not flags & 0x1:
                conn.sendall(frame(SETTINGS, 0x1, 0, b""))
            elif ftype == HEADERS and flags & END_HEADERS:
                if where == "head":
                    conn.sendall(frame(HEADERS, END_STREAM | END_HEADERS, stream,
                                       b"\x88" + hpack_bomb()))
                else:
                    conn.sendall(frame(HEADERS, END_HEADERS, stream, b"\x88")
                                 + frame(DATA, 0, stream, b"hello"))
                    if not body_seen.wait(TIMEOUT):
                        return
                    conn.sendall(frame(HEADERS, END_STREAM | END_HEADERS, stream, hpack_bomb()))
    return handle


def read_stream(client, stream: int, body_seen: threading.Event | None = None) -> dict:
    """The client's view of `stream` until it ends (END_STREAM or RST_STREAM) or the connection
    does: its header lists (decoded, however large), its body, and its reset code if any.
    `body_seen` is set at its first DATA."""
    decoder = hpack.Decoder()
    decoder.max_header_list_size = 1 << 31
    out = {"heads": [], "body": b"", "reset": None, "ended": False}
    block, block_flags = b"", 0
    while True:
        f = client.next_frame()
        if f is None:
            return out
        if f.stream != stream:
            continue
        if f.type == RST_STREAM:
            out["reset"] = int.from_bytes(f.payload[:4], "big")
            return out
        if f.type == DATA:
            out["body"] += f.payload
            if body_seen is not None:
                body_seen.set()
        elif f.type in (HEADERS, CONTINUATION):
            payload = f.payload
            if f.type == HEADERS:
                block_flags = f.flags
                if f.flags & 0x8:                      # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if f.flags & 0x20:                     # PRIORITY
                    payload = payload[5:]
            block += payload
            if f.flags & END_HEADERS:
                out["heads"].append(decoder.decode(block, raw=False))
                block = b""
                if block_flags & END_STREAM:
                    out["ended"] = True
                    return out
            continue
        if f.flags & END_STREAM:
            out["ended"] = True
            return out


def test_an_hpack_bomb_in_an_h2c_response_head_is_a_502(serve, pki):
    """The upstream's response head is `:status 200` and the bomb: counted as it is decoded,
    it is refused past 64 KiB (the upstream's stream reset) and the client gets a 502, mtlsd
    holding nothing of it. Before, every field was copied (48 MB for one 16 KB frame) and
    passed on."""
    daemon, _ = serve(bombing_h2c("head"),
                      http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    try:
        before = status_kb(daemon.pid, "VmRSS")
        client.get(1, "localhost", "/bomb-head")
        seen = read_stream(client, 1)
        peak = status_kb(daemon.pid, "VmHWM")
    finally:
        client.sock.close()
    line = wait_request_line(daemon, path="/bomb-head")
    assert line.get("detail") == f"upstream: response header list over {HEAD_LIMIT} bytes", line
    assert line["status"] == 502, line
    statuses = [dict(h).get(":status") for h in seen["heads"]]
    assert statuses == ["502"], (statuses, seen["reset"], sum(len(h) for h in seen["heads"]))
    assert SANITIZED or peak - before < 50 << 20, f"mtlsd grew by {(peak - before) >> 20} MB"


def test_an_hpack_bomb_in_h2c_response_trailers_resets_the_stream(serve, pki):
    """The bomb as the trailers, after a 200 head and DATA: the client's stream is reset (its
    response began), the request line says why, and mtlsd holds nothing of the trailers.
    Before, they were copied (48 MB) and accepted."""
    body_seen = threading.Event()
    daemon, _ = serve(bombing_h2c("trailers", body_seen),
                      http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    try:
        before = status_kb(daemon.pid, "VmRSS")
        client.get(1, "localhost", "/bomb-trailers")
        seen = read_stream(client, 1, body_seen)
        peak = status_kb(daemon.pid, "VmHWM")
    finally:
        body_seen.set()
        client.sock.close()
    line = wait_request_line(daemon, path="/bomb-trailers")
    assert line.get("detail") == f"upstream: response trailers over {HEAD_LIMIT} bytes", line
    assert seen["reset"] is not None, (seen["ended"], len(seen["heads"]))
    assert [dict(h).get(":status") for h in seen["heads"]] == ["200"], len(seen["heads"])
    assert seen["body"] == b"hello"
    assert SANITIZED or peak - before < 50 << 20, f"mtlsd grew by {(peak - before) >> 20} MB"


# --- request trailers: a header list of their own ------------------------------------------

def test_request_trailers_after_a_large_head_all_reach_the_upstream(http_serve, pki):
    """A request head of some 61 KiB (under the 64 KiB limit, no END_STREAM), DATA, then 64
    trailers (8 KB): every trailer reaches the HTTP/1.1 upstream in the chunked body's trailer
    section. Before, the trailers were counted on top of the head and those past 64 KiB were
    dropped without a word (about 20 went up)."""
    daemon, _, rec = http_serve(http={"protocols": ["h2"]})
    pads = tuple((f"x-pad-{i:03d}", "v" * 120) for i in range(390))   # 390 x 161 = 62,790
    trailers = [(f"t{i:02d}", "w" * 90) for i in range(1, 65)]         # 64 x 125 = 8,000
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False, extra=pads)
        client.conn.send_data(sid, b"payload")
        client.conn.send_headers(sid, trailers, end_stream=True)
        client.flush()
        status, _ = client.response(sid, TIMEOUT)
    finally:
        client.close()
    assert status == 200
    [req] = [r for r in rec.requests if r.target == "/upload"]
    assert req.body == b"payload"
    assert len(req.get_all("x-pad-389")) == 1, "the head did not go up whole"
    got = [name for name, _ in req.trailers]
    assert req.trailers == trailers, f"{len(got)} of {len(trailers)} trailers: last {got[-1:]}"


def test_request_trailers_over_the_limit_reset_the_stream(http_serve, pki):
    """Trailers alone over 64 KiB (520 x 136 = 70,720 bytes; the head is small): no 431 can
    answer them, so the stream is reset and the request line says why. Before, the trailers
    past the limit were dropped and the request went up as if whole (a 200 came back)."""
    rec = HttpRecorder()
    recording = rec.handler()

    def handle(conn) -> None:
        try:
            recording(conn)
        except (AttributeError, ConnectionError):   # the body cut short by the reset: expected
            pass
    daemon, _, _ = http_serve(handler=handle, http={"protocols": ["h2"]})
    trailers = [(f"t{i:03d}", "w" * 100) for i in range(520)]
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False)
        client.conn.send_data(sid, b"payload")
        client.conn.send_headers(sid, trailers, end_stream=True)
        client.flush()
        ended = client.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded,
                                                           h2.events.StreamReset))
                                and ev.stream_id == sid, TIMEOUT)
        mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
    finally:
        client.close()
    line = wait_request_line(daemon, path="/upload")
    assert isinstance(ended, h2.events.StreamReset), (status_of(mine), mine[:3])
    assert line.get("detail") == f"request trailers over {HEAD_LIMIT} bytes: reset", line
    assert not [r.trailers[:1] for r in rec.requests if r.target == "/upload"], \
        "a cut-short trailer section went up"
