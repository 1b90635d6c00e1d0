"""HTTP/1.1 messages as mtlsd passes them on, in `http:` mode: what it writes itself where the
bytes it read cannot (or must not) go on as they came.

- A request whose head went up but whose chunked body is malformed (no CRLF after the chunk
  data, a chunk size past 64 bits, a control character in a chunk extension) is answered
  `400 Bad Request` by mtlsd when no response has begun, not with a bare close that leaves
  the client guessing (RFC 9112 7.1; a server answers a request it cannot read with 400).
  Once a response began, nothing may follow it: a 400 there would answer a request the client
  has not sent.
- A response's hop-by-hop fields stay on the upstream's hop (RFC 9110 7.6.1): those its
  `Connection` field names, and Keep-Alive, Proxy-Connection, and Upgrade on anything but a
  101. mtlsd writes its own `Connection` (close or keep-alive) for its own decision.
- An HTTP/2 client sees an HTTP/1.1 upstream's framing as HTTP/2 allows it: `Content-Length:
  2, 2` (a list of one value, RFC 9110 8.6) as one `content-length: 2`, and no content-length
  on a 204 (RFC 9110 8.6: a 204 must not carry one); before, curl reset the stream with
  PROTOCOL_ERROR and the response was lost.
The clients are raw TLS sockets (the exact bytes matter) and raw HTTP/2 frames decoded here
(test_http2_upstream_changes.Conversation); the upstreams are written here or are
http_upstream's strict parser."""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

import pytest

from clients import curl
from http_upstream import Reader, read_request
from helpers import wait_request_line
from mtlsd_harness import client_context, open_tls
from test_http2_upstream_changes import get_once
from test_http_mode import SockConn, raw_exchange
import test_http_mode

http_serve = test_http_mode.http_serve  # the fixture: (daemon, upstream, recorder)

TIMEOUT = 10.0
SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"


# --- a malformed request body after the head went up ----------------------------------------

CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def swallowing(closed: threading.Event, answer: bytes | None = None):
    """An upstream that reads a request's head, sends `answer` (if any) at once, then reads
    everything until mtlsd closes (`closed` is set then)."""
    def handle(conn) -> None:
        reader = Reader(conn)
        if reader.until(b"\r\n\r\n") is not None and answer is not None:
            conn.sendall(answer)
        while conn.recv():
            pass
        closed.set()
    return handle


@pytest.mark.parametrize("body", [
    b"1\r\nAB\r\n0\r\n\r\n",                      # chunk data not followed by CRLF
    b"10000000000000001\r\nA\r\n0\r\n\r\n",       # a chunk size that overflows 64 bits
    b'1;a="\n"\r\nA\r\n0\r\n\r\n',                # a bare LF inside a chunk extension
], ids=["no-crlf-after-chunk-data", "chunk-size-overflow", "control-char-in-chunk-extension"])
def test_a_malformed_body_after_the_head_went_up_gets_400(http_serve, pki, body):
    """The head is forwarded before the body is read; the body then turns out malformed, and the
    upstream has not answered: mtlsd answers 400 and closes (both connections), and the request
    line says 400. Before: a bare close, no response at all."""
    closed = threading.Event()
    daemon, up, _ = http_serve(handler=swallowing(closed))
    out, local = raw_exchange(daemon, pki, CHUNKED_HEAD + body)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), \
        f"no 400 for a malformed request body: {out!r}"
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head, out
    assert closed.wait(TIMEOUT), "mtlsd kept the upstream connection open"
    received = b"".join(c.received for c in up.connections)
    assert received.startswith(b"POST /up HTTP/1.1\r\n"), received      # the head went up
    line = daemon.wait_for_access(client=local)
    assert line["detail"].startswith("malformed request body"), line
    request = wait_request_line(daemon, client=local)
    assert request["status"] == 400, request
    assert request["detail"] == line["detail"], request  # review: it was empty


def test_a_malformed_body_after_the_response_began_gets_no_400(http_serve, pki):
    """Not to regress: the upstream answered (200, whole) as soon as the head arrived; the body
    that follows is malformed. The connection ends with nothing after the 200: a 400 now would
    be read by the client as the answer to a next request."""
    closed = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    daemon, _, _ = http_serve(handler=swallowing(closed, answer))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(CHUNKED_HEAD + b"2\r\nab\r\n")
        reader = Reader(SockConn(sock))
        head = reader.until(b"\r\n\r\n")
        assert head is not None and head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        assert reader.exact(2) == b"ok"
        rest = bytes(reader.buf)
        try:
            sock.sendall(b"1\r\nAB\r\n0\r\n\r\n")          # no CRLF after the chunk data
            while chunk := sock.recv(65536):
                rest += chunk
        except (ConnectionError, ssl.SSLError):   # mtlsd may close before it reads it all
            pass
    assert rest == b"", f"mtlsd sent more after the response: {rest!r}"
    assert closed.wait(TIMEOUT), "mtlsd kept the upstream connection open"


# --- hop-by-hop fields of a response ----------------------------------------------------------

def answering_each(raw: bytes):
    """An upstream that answers every request on its connection with exactly `raw`."""
    def handle(conn) -> None:
        reader = Reader(conn)
        while read_request(reader) is not None:
            conn.sendall(raw)
        conn.shutdown_write()
    return handle


def read_head_and_body(reader: Reader) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """(status line, fields in order as sent, Content-Length body) of one response."""
    raw = reader.until(b"\r\n\r\n")
    assert raw is not None, "EOF before a response"
    status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    fields = [(name.strip().lower(), value.strip())
              for name, _, value in (line.partition(":") for line in lines)]
    length = [v for n, v in fields if n == "content-length"]
    body = reader.exact(int(length[0])) if length else b""
    return status_line.encode(), fields, body


HOP_BY_HOP = {
    "named-in-connection": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
        b"X-Secret: 1\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n"
        b"Content-Length: 2\r\n\r\nok"),
    "second-connection-line": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-Kept: yes\r\nConnection: X-Other\r\n"
        b"X-Other: 2\r\nContent-Length: 2\r\n\r\nok"),
}


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_a_responses_hop_by_hop_fields_stay_upstream(http_serve, pki, name):
    """Two requests on one connection (keep-alive, then Connection: close), each answered with
    hop-by-hop fields: the client gets neither them nor the fields the upstream's Connection
    names, only mtlsd's own Connection (close or keep-alive), and every other field."""
    daemon, _, _ = http_serve(handler=answering_each(HOP_BY_HOP[name]))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        responses = []
        for extra in (b"", b"Connection: close\r\n"):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            responses.append(read_head_and_body(reader))
    for status_line, fields, body in responses:
        assert (status_line, body) == (b"HTTP/1.1 200 OK", b"ok"), (status_line, body)
        names = [n for n, _ in fields]
        leaked = {"keep-alive", "proxy-connection", "upgrade", "x-secret", "x-other"} & set(names)
        assert not leaked, f"hop-by-hop fields reached the client: {sorted(leaked)} in {fields}"
        tokens = {t.strip().lower() for n, v in fields if n == "connection" for t in v.split(",")}
        assert tokens <= {"close", "keep-alive"}, fields
        assert ("x-kept", "yes") in fields, fields


def test_an_http10_response_rewritten_still_keeps_the_connection(http_serve, pki):
    """Review of the rewrite: an HTTP/1.0 response (its start line stays) with Keep-Alive to an
    HTTP/1.1 client lost its "Connection: keep-alive" with the field, and the client (curl)
    then assumed a close after the body. It is said whenever the connection stays open; the
    second request goes on the same connection."""
    raw = (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
           b"Content-Length: 2\r\n\r\nok")
    daemon, _, _ = http_serve(handler=answering_each(raw))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status_line, fields, body = read_head_and_body(reader)
            assert (status_line, body) == (b"HTTP/1.0 200 OK", b"ok"), (status_line, body)
            assert ("connection", "keep-alive") in fields, fields
            assert "keep-alive" not in [n for n, _ in fields], fields


def test_an_http10_client_that_asked_to_keep_alive_is_told_it_stays(http_serve, pki):
    """Review: a plain HTTP/1.1 response (no hop-by-hop field, so no rewrite) reached an
    HTTP/1.0 client unchanged; without "Connection: keep-alive" that client must assume a close,
    while mtlsd kept the connection open. It is said; the second request goes on the same
    connection."""
    daemon, _, _ = http_serve(handler=answering_each(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            status_line, fields, body = read_head_and_body(reader)
            assert (status_line, body) == (b"HTTP/1.1 200 OK", b"ok"), (status_line, body)
            assert ("connection", "keep-alive") in fields, fields


def test_an_upstream_answering_while_it_reads_the_body_keeps_the_connection(http_serve, pki):
    """An upstream that starts its (chunked) answer as soon as the head arrives, then reads the
    body and ends the answer: the request body ended before the response did, so the connection
    stays for the next request (a review of an earlier fix found it closed, the head saying so
    before the body's end was known)."""
    def answer_while_reading(conn) -> None:
        reader = Reader(conn)
        while (head := reader.until(b"\r\n\r\n")) is not None:
            length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            if length:
                reader.exact(length[0])
            conn.sendall(b"2\r\nok\r\n0\r\n\r\n")
    daemon, _, _ = http_serve(handler=answer_while_reading)
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        head = reader.until(b"\r\n\r\n")
        assert head is not None and b"close" not in head.lower(), head
        sock.sendall(b"hello")
        assert reader.until(b"0\r\n\r\n") is not None
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = reader.until(b"\r\n\r\n")
        assert head is not None and head.startswith(b"HTTP/1.1 200"), head


# --- an HTTP/2 client, an HTTP/1.1 upstream's length fields ---------------------------------

LENGTHS = {
    "list-of-one-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
                           200, ["2"], b"ok"),
    "204-with-length": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                        204, [], b""),
}


@pytest.mark.parametrize("name", sorted(LENGTHS))
def test_an_http2_client_gets_an_http11_upstreams_length_as_http2_allows(http_serve, pki, name):
    """The head as the HTTP/2 client receives it (frames, HPACK decoded): the content-length
    fields are as HTTP/2 allows, the stream ends cleanly; and curl --http2 takes the response
    (before: "stream 1 was not closed cleanly: PROTOCOL_ERROR")."""
    raw, status, lengths, body = LENGTHS[name]
    daemon, _, _ = http_serve(handler=answering_each(raw), http={"protocols": ["h2", "http/1.1"]})
    conv = get_once(daemon, pki, "/")
    assert conv.status(1) == status, conv.describe(1)
    (head,) = conv.heads[1]
    assert [v for n, v in head if n == "content-length"] == lengths, head
    assert (conv.bodies[1], 1 in conv.ended, conv.resets.get(1)) == (body, True, None), \
        conv.describe(1)
    r = curl(daemon.addr(), pki, extra=("--http2", "-o", "/dev/null", "-w", "%{http_code}"))
    assert (r.returncode, r.stdout) == (0, str(status).encode()), r.stderr


# --- what an idle connection keeps after a large exchange -------------------------------------

PAD_FIELDS = 14  # 14 fields of 4,000 bytes: a 56 KB head, within the 64 KiB head limit
PADDING = "".join(f"X-Pad-{i}: {'p' * 4000}\r\n" for i in range(PAD_FIELDS)).encode()


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(SANITIZED, reason="RSS says nothing under ASan (its quarantine holds freed "
                                      "memory)")
def test_an_idle_connection_gives_back_the_memory_of_a_large_head(http_serve, pki):
    """A connection that relayed a 56 KB request head and a 56 KB response head (rewritten: it
    names hop-by-hop fields) and then idles keeps a usual head's buffers, not the large ones.
    One connection after another, each kept open: what each keeps shows as resident memory that
    grows with the count. Keeping both edited heads costs over 110 KiB per connection; an idle
    HTTP/1.1 connection costs ~40 KiB in a debug build."""
    raw = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n" + PADDING +
           b"Content-Length: 2\r\n\r\nok")
    daemon, _, _ = http_serve(handler=answering_each(raw))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + PADDING + b"\r\n"
    ctx = client_context(pki, "client")
    held = []

    def exchange() -> None:
        sock = open_tls(daemon.addr(), ctx)
        held.append(sock)
        sock.sendall(request)
        status, fields, body = read_head_and_body(Reader(SockConn(sock)))
        assert status == b"HTTP/1.1 200 OK" and body == b"ok", status
        assert ("x-secret", "1") not in fields and len(fields) >= PAD_FIELDS

    try:
        for _ in range(10):  # the allocator's and the worker's own growth first
            exchange()
        before = resident_kib(daemon.pid)
        count = 60
        for _ in range(count):
            exchange()
        per_connection = (resident_kib(daemon.pid) - before) / count
    finally:
        for sock in held:
            sock.close()
    assert per_connection < 80, f"{per_connection:.1f} KiB kept per idle connection"
