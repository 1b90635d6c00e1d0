"""The admin listener under hostile clients (a review's findings): a request that never ends
cannot grow mtlsd's memory, 64 connections that each keep one byte of a next request cannot
keep a probe out, and a request that cannot be read is answered with why (400, 413, 431), as
nginx does, instead of a bare close (with no body after a HEAD)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from faults import rss_kib
from mtlsd_harness import parse_address

HEAD = b"GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def connect(daemon) -> socket.socket:
    return socket.create_connection(parse_address(daemon.admin_address), timeout=5)


def answer_to(daemon, request: bytes) -> bytes:
    """What the admin server answers to `request`, read to its close."""
    with connect(daemon) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def flood_until_answered(daemon, first: bytes, filler: bytes, limit: int) -> tuple[bytes, int]:
    """Sends `first`, then `filler` until mtlsd answers or `limit` bytes went out; returns the
    answer and how many bytes were sent."""
    with connect(daemon) as s:
        s.sendall(first)
        sent = len(first)
        s.setblocking(False)
        answer = b""
        while sent < limit and not answer:
            try:
                answer = s.recv(4096)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sent += s.send(filler)
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break  # closed: the answer is in the receive queue
        s.setblocking(True)
        s.settimeout(5)
        try:
            answer += s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            pass
        return answer, sent


@pytest.mark.parametrize("first,filler", [
    (HEAD + b"1;", b"x" * 65536),                # a chunk extension that never ends
    (HEAD + b"0\r\n", b"X-Trailer: y\r\n" * 4096),  # trailers that never end
    (HEAD + b"0", b"0" * 65536),                 # a chunk size of endless leading zeros
], ids=["chunk-extension", "trailers", "chunk-size"])
def test_a_request_that_never_ends_is_refused_without_growing_memory(serve, first, filler):
    """Review: Beast's header and body limits do not bound its read buffer, which took 200 MB
    from one connection in 2 s (a 256 MiB pod is OOM-killed, taking the data plane with it)."""
    daemon, _ = serve()
    before = rss_kib(daemon.pid)
    answer, sent = flood_until_answered(daemon, first, filler, limit=64 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 400 "), (answer[:200], sent)
    assert sent < 16 * 1024 * 1024, f"{sent} bytes taken before the refusal"
    assert rss_kib(daemon.pid) - before < 8 * 1024, "memory grew with the flood"
    assert daemon.admin_request("/healthz").status == 200


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n", b"431"),
    (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", b"413"),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     b"400"),
    (b"GET /health\x01z HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
], ids=["header-too-large", "body-too-large", "two-content-lengths", "control-in-target"])
def test_a_request_that_cannot_be_read_is_answered_with_why(serve, request_bytes, status):
    """Review: these got a bare close (or a reset), which tells an operator's curl nothing."""
    daemon, _ = serve()
    answer = answer_to(daemon, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    assert b"\r\nConnection: close\r\n" in answer, answer[:300]


@pytest.mark.parametrize("request_bytes,status", [
    (b"HEAD /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
    (b"HEAD /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n", b"431"),
    (b"HEAD /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", b"413"),
    (b"HEAD /health\x01z HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
], ids=["two-hosts", "header-too-large", "body-too-large", "control-in-target"])
def test_a_refused_head_request_gets_no_body(serve, request_bytes, status):
    """admin_server_fuzz (CI): a refusal sent its body to a HEAD, which a client reads as the
    start of the next response (RFC 9110 9.3.2); the Content-Length stays the GET's."""
    daemon, _ = serve()
    answer = answer_to(daemon, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b"", answer
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert len(length) == 1 and int(length[0].split(b":")[1]) > 0, head


def test_connections_holding_a_byte_of_a_next_request_cannot_keep_a_probe_out(serve):
    """Review: a connection with part of its next request buffered counted as busy, never
    evicted; 64 such (a request, then one byte) held every place, and /healthz failed until
    they went away (a liveness probe would restart the pod)."""
    daemon, _ = serve()
    held = []
    try:
        for _ in range(64):  # the admin server's cap
            s = connect(daemon)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nG")
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "not served"
            held.append(s)
        for _ in range(5):
            assert daemon.admin_request("/healthz").status == 200
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("version,fields,closes", [
    (b"1.1", b"Connection: x-trace\r\nConnection: close\r\n", True),
    (b"1.0", b"Connection: x-trace\r\nConnection: keep-alive\r\n", False),
], ids=["http11-close-on-a-second-line", "http10-keep-alive-on-a-second-line"])
def test_every_connection_field_decides_keep_alive(serve, version, fields, closes):
    """Connection fields on several lines are one list (RFC 9110 5.3): a `close` on the second
    line ends the connection after the first answer, the next request unread (RFC 9112 9.6); a
    `keep-alive` there keeps an HTTP/1.0 one. Found by admin_server_fuzz: only the first line
    was read."""
    daemon, _ = serve()
    request = b"GET /healthz HTTP/" + version + b"\r\nHost: a\r\n" + fields + b"\r\n"
    with connect(daemon) as s:
        s.sendall(request + b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    answers = out.count(b"HTTP/1.")
    assert answers == (1 if closes else 2), out
    assert (b"Connection: close" in out.split(b"\r\n\r\n")[0]) == closes, out


def answered_with_reset(s: socket.socket) -> bool:
    """After the server's FIN: whether a byte sent now meets a reset (mtlsd closed with bytes
    unread; Linux sends the reset right after the FIN, or in answer to this byte) or an
    acknowledgement (mtlsd still reads). Waits for one or the other, read from TCP_INFO."""
    try:
        s.send(b"y")
    except (BrokenPipeError, ConnectionResetError):
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        state, unacked = info[0], struct.unpack_from("I", info, 24)[0]
        if state == 7:  # TCP_CLOSE: the reset came
            return True
        if unacked == 0:
            return False
    raise AssertionError("neither an acknowledgement nor a reset within 5 s")


def test_a_refused_request_ends_in_a_fin_not_a_reset(serve):
    """Review: after a refusal the admin server closed with the client's body unread, which
    makes TCP send a reset: over a network, an answer still in flight is lost with it (RFC 9112
    9.6). It now sends its FIN and reads what is left, as nginx's lingering close."""
    daemon, _ = serve()
    with connect(daemon) as s:
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
                  + b"x" * 65536)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        assert out.startswith(b"HTTP/1.1 413 "), out[:200]
        assert not answered_with_reset(s)
    assert daemon.admin_request("/healthz").status == 200
