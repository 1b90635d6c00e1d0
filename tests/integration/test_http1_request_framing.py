"""HTTP/1.1 request framing as mtlsd passes it on, in `http:` mode.

- A chunked request body goes upstream with framing mtlsd writes, not the client's: each chunk
  header is the size alone, in lower-case hex without leading zeros and without chunk
  extensions ("1f\\r\\n"), then the chunk's data as the client sent it and CRLF; the last chunk
  is "0\\r\\n", the client's trailer fields ("Name: value\\r\\n", the value trimmed), then CRLF.
  Extensions, leading zeros, upper-case hex and whitespace are the client's spelling, which
  another parser (the upstream's) may read differently (request smuggling); mtlsd says the same
  thing in one spelling. The access line's byte counts do not change with it.
- Empty lines before a request line are ignored (RFC 9112 2.2: a server SHOULD ignore at least
  one), the first request's and one after a body (old clients send a CRLF after a POST body);
  the upstream never sees them. A bare LF there is still refused (mtlsd takes no bare-LF line
  endings), and empty lines alone hold a connection no longer than
  `http.request_headers_timeout`.
The clients are raw TLS sockets (the exact bytes matter); the upstream is http_upstream's
strict parser, and what it received is checked byte by byte."""

from __future__ import annotations

import re
import signal
import ssl
import time

import pytest

from helpers import wait_request_line
from http_upstream import Reader
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http_mode import SockConn, raw_exchange, read_response
import test_http_mode

http_serve = test_http_mode.http_serve  # the fixture: (daemon, upstream, recorder)

TIMEOUT = 10.0
CANONICAL_SIZE = re.compile(rb"0|[1-9a-f][0-9a-f]*")


# --- what the upstream received, split into messages ----------------------------------------

def split_messages(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The upstream's received bytes as (head, body as framed on the wire) per request; the
    body's end is found the way a strict parser finds it (Content-Length, or chunk sizes read
    leniently so that the client's spelling, had it gone up, is still split correctly)."""
    out, at = [], 0
    while at < len(raw):
        end = raw.index(b"\r\n\r\n", at) + 4
        head, start = raw[at:end], end
        fields = {n.strip().lower(): v.strip() for n, _, v in
                  (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                line_end = raw.index(b"\r\n", end)
                size = int(raw[end:line_end].split(b";")[0].strip(), 16)
                end = line_end + 2
                if size == 0:
                    while raw[end:end + 2] != b"\r\n":          # trailer fields
                        end = raw.index(b"\r\n", end) + 2
                    end += 2
                    break
                end += size + 2
        else:
            end += int(fields.get(b"content-length", b"0"))
        out.append((head, raw[start:end]))
        at = end
    return out


def upstream_messages(up) -> list[tuple[bytes, bytes]]:
    return [m for c in up.connections for m in split_messages(bytes(c.received))]


def decode_canonical_chunks(raw: bytes) -> bytes:
    """The data of a chunked body whose every chunk header is a canonical size and which has no
    trailer (the chunking itself may be mtlsd's); AssertionError otherwise."""
    data, at = b"", 0
    while True:
        end = raw.index(b"\r\n", at)
        size_line = raw[at:end]
        assert CANONICAL_SIZE.fullmatch(size_line), \
            f"chunk header {size_line!r} went up as the client wrote it: {raw!r}"
        size, at = int(size_line, 16), end + 2
        if size == 0:
            assert raw[at:] == b"\r\n", f"after the last chunk: {raw[at:]!r}"
            return data
        data += raw[at:at + size]
        assert raw[at + size:at + size + 2] == b"\r\n", raw
        at += size + 2


# --- chunk headers of a request body, as mtlsd writes them ---------------------------------

CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"

# name: (body as the client sends it, body as the upstream must receive it, the data)
CHUNKED_BODIES = {
    "leading-zeros-and-extension": (
        b"00000000000000000000000000001;a=b\r\nA\r\n0\r\n\r\n",
        b"1\r\nA\r\n0\r\n\r\n", b"A"),
    "upper-case-hex": (
        b"1F\r\n" + b"x" * 31 + b"\r\n0\r\n\r\n",
        b"1f\r\n" + b"x" * 31 + b"\r\n0\r\n\r\n", b"x" * 31),
    "quoted-extension": (
        b'5;a="x\\"y;b";c\r\nhello\r\n0\r\n\r\n',
        b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    "whitespace-before-extension": (
        b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    "last-chunk-zeros-and-extension": (
        b"5\r\nhello\r\n000;x=y\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    # A chunk's data that looks like a last chunk is data: it goes up whole, in its own chunk.
    "last-chunk-inside-data": (
        b"0A;q=1\r\nab\r\n0\r\n\r\nc\r\n03\r\nxyz\r\n0\r\n\r\n",
        b"a\r\nab\r\n0\r\n\r\nc\r\n3\r\nxyz\r\n0\r\n\r\n", b"ab\r\n0\r\n\r\ncxyz"),
}


@pytest.mark.parametrize("name", sorted(CHUNKED_BODIES))
def test_chunk_headers_go_up_as_mtlsd_writes_them(http_serve, pki, name):
    """Each chunk header of the body the upstream receives is the size alone, in lower-case hex
    without leading zeros; the data is the client's, byte for byte."""
    sent, expected, data = CHUNKED_BODIES[name]
    daemon, up, rec = http_serve()
    out, _ = raw_exchange(daemon, pki, CHUNKED_HEAD + b"Connection: close\r\n\r\n" + sent)
    assert out.startswith(b"HTTP/1.1 200 "), out
    (req,) = rec.requests
    assert (req.chunked, req.body) == (True, data), req
    ((head, body),) = upstream_messages(up)
    assert head.startswith(b"POST /up HTTP/1.1\r\n"), head
    assert body == expected, f"the body went up as {body!r}, not {expected!r}"


def test_a_chunked_body_in_pieces_still_goes_up_canonical(http_serve, pki):
    """The body comes in many TLS records, a chunk header split inside its leading zeros, its
    hex digits, its extension and its CRLF: each chunk still goes up with a canonical header
    (mtlsd may chunk the data its own way), and the data arrives whole."""
    data = bytes(range(48, 48 + 31)) + b"Z" * 300
    pieces = [CHUNKED_HEAD + b"Connection: close\r\n\r\n", b"0", b"01", b"F", b';ext="a;', b'b"',
              b"\r", b"\n" + data[:10], data[10:31] + b"\r\n0", b"12c", b"\r\n", data[31:],
              b"\r\n00", b"0;end\r", b"\n\r\n"]
    daemon, up, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        for piece in pieces:
            sock.sendall(piece)
            # Nothing observable says mtlsd has read a piece (a part of a chunk header forwards
            # nothing): a short pause makes each piece its own read.
            time.sleep(0.05)
        reader = Reader(SockConn(sock))
        status, _, _ = read_response(reader)
    assert status == 200
    (req,) = rec.requests
    assert req.body == data, req
    ((_, body),) = upstream_messages(up)
    assert decode_canonical_chunks(body) == data


def test_a_trailer_field_goes_up_as_name_colon_value(http_serve, pki):
    """The trailer after the last chunk goes up: the name as sent, one space, the value without
    the whitespace around it, CRLF; then the empty line."""
    daemon, up, rec = http_serve()
    sent = b"3;x=1\r\nabc\r\n00\r\nX-Body-Sum:  \t 1234abcd \t\r\n\r\n"
    out, _ = raw_exchange(daemon, pki, CHUNKED_HEAD + b"Connection: close\r\n\r\n" + sent)
    assert out.startswith(b"HTTP/1.1 200 "), out
    (req,) = rec.requests
    assert (req.body, req.trailers) == (b"abc", [("X-Body-Sum", "1234abcd")]), req
    ((_, body),) = upstream_messages(up)
    assert body == b"3\r\nabc\r\n0\r\nX-Body-Sum: 1234abcd\r\n\r\n", body


def test_two_chunked_requests_on_one_connection_both_go_up_canonical(http_serve, pki):
    """Keep-alive: the second body's chunk headers are read and written by a parser that starts
    afresh (no state of the first body's last chunk or extension left over)."""
    daemon, up, rec = http_serve()
    sends = [(b"0005;a=\"1\"\r\nfirst\r\n0;z\r\n\r\n", b"5\r\nfirst\r\n0\r\n\r\n"),
             (b"6 ;b\r\nSecond\r\n00\r\n\r\n", b"6\r\nSecond\r\n0\r\n\r\n")]
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for sent, _ in sends:
            sock.sendall(CHUNKED_HEAD + b"\r\n" + sent)
            status, _, _ = read_response(reader)
            assert status == 200
    assert [r.body for r in rec.requests] == [b"first", b"Second"], rec.requests
    bodies = [body for _, body in upstream_messages(up)]
    assert bodies == [expected for _, expected in sends], bodies


def test_the_access_lines_byte_counts_stay_the_clients(http_serve, pki):
    """Pins: rewriting the framing changes what goes upstream, not what is counted. The request
    line's req_bytes is the body's data; the access line's rx_bytes is what the client sent."""
    sent, _, data = CHUNKED_BODIES["leading-zeros-and-extension"]
    request = CHUNKED_HEAD + b"Connection: close\r\n\r\n" + sent
    daemon, _, _ = http_serve()
    out, local = raw_exchange(daemon, pki, request)
    assert out.startswith(b"HTTP/1.1 200 "), out
    line = wait_request_line(daemon, client=local)
    assert (line["status"], line["req_bytes"]) == (200, len(data)), line
    access = daemon.wait_for_access(client=local)
    assert (access["rx_bytes"], access["tx_bytes"]) == (len(request), len(out)), access


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",               # 400, refused by mtlsd
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",      # 200, from upstream
], ids=["mtlsds-own-400", "upstreams-200"])
def test_tx_bytes_counts_what_reached_the_client(http_serve, pki, request_bytes):
    """tx_bytes is what went to the client, mtlsd's own answers included (a 400 of its own
    read tx_bytes=0: only the upstream's bytes were counted)."""
    daemon, _, _ = http_serve()
    out, local = raw_exchange(daemon, pki, request_bytes)
    assert out.startswith(b"HTTP/1.1 "), out
    access = daemon.wait_for_access(client=local)
    assert (access["rx_bytes"], access["tx_bytes"]) == (len(request_bytes), len(out)), access


# --- empty lines before a request line ---------------------------------------------------------

GET_CLOSE = b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("empty_lines", [1, 3])
def test_empty_lines_before_the_first_request_are_ignored(http_serve, pki, empty_lines):
    """CRLFs before the first request line: the request is served (from upstream), which
    receives the request alone."""
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, b"\r\n" * empty_lines + GET_CLOSE)
    assert out.startswith(b"HTTP/1.1 200 "), \
        f"{empty_lines} empty line(s) before a request line: {out[:200]!r}"
    assert [r.target for r in rec.requests] == ["/after"], rec.requests
    ((head, body),) = upstream_messages(up)
    assert head.startswith(b"GET /after HTTP/1.1\r\n") and body == b"", head
    assert wait_request_line(daemon, client=local)["status"] == 200


@pytest.mark.parametrize("together", [False, True], ids=["next-request-later", "pipelined"])
def test_a_crlf_after_a_body_is_not_the_next_request(http_serve, pki, together):
    """Keep-alive: a POST with a Content-Length body, then an extra CRLF (as old clients sent
    it), then a GET (after the POST's response, or in the same write): both are answered from
    upstream, which sees neither the CRLF nor anything else between the two requests."""
    post = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\n"
    daemon, up, rec = http_serve()
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        sock.sendall(post + GET_CLOSE if together else post)
        first = read_response(reader)
        assert first is not None and first[0] == 200, first
        if not together:
            sock.sendall(GET_CLOSE)
        second = read_response(reader)
        assert second is not None and second[0] == 200, \
            f"the request after a body's stray CRLF: {second}"
    assert [(r.method, r.target, r.body) for r in rec.requests] == \
        [("POST", "/first", b"hello"), ("GET", "/after", b"")], rec.requests
    (first_head, first_body), (second_head, _) = upstream_messages(up)
    assert first_body == b"hello", first_body
    assert second_head.startswith(b"GET "), second_head


def test_a_bare_lf_before_the_request_line_is_refused(http_serve, pki):
    """Pins: a bare LF is no empty line (mtlsd takes no bare-LF line endings): 400, and nothing
    reaches the upstream."""
    daemon, up, rec = http_serve()
    out, local = raw_exchange(daemon, pki, b"\n" + GET_CLOSE)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert up.total_received() == 0 and rec.requests == []
    assert wait_request_line(daemon, client=local)["status"] == 400


def test_empty_lines_alone_hold_a_connection_no_longer_than_the_head_deadline(http_serve, pki):
    """Pins: CRLFs and then nothing are the start of a request head, which must be whole within
    http.request_headers_timeout of its first byte (1s here; the idle timeout is 30s): the
    connection closes at that deadline, without a response, and nothing goes upstream."""
    daemon, up, rec = http_serve(http={"request_headers_timeout": "1s"},
                                 timeouts={"idle": "30s"})
    got = b""
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.settimeout(8)
        start = time.monotonic()
        sock.sendall(b"\r\n\r\n")
        try:
            while chunk := sock.recv(65536):                 # returns at mtlsd's close
                got += chunk
        except TimeoutError:
            raise AssertionError(f"still open 8s after empty lines; got {got!r}") from None
        except (ssl.SSLError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - start
    assert elapsed < 5, f"closed {elapsed:.2f}s after empty lines, past the 1s deadline"
    assert got == b"", f"answered empty lines after {elapsed:.2f}s with {got!r}"
    assert 0.9 <= elapsed, f"closed {elapsed:.2f}s after empty lines, before the deadline"
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "idle_timeout", line
    assert up.total_received() == 0 and rec.requests == []


# --- found by the change's review ----------------------------------------------------------------

def test_a_refused_trailer_keeps_the_last_chunk_from_the_upstream(http_serve, pki):
    """A trailer refused (X-Forwarded-*) after data chunks in the same write: the client gets 400
    and the upstream must not get the last chunk ("0\\r\\n"), which would read as a whole body
    (the first rewrite wrote the last chunk and the trailers before they were all judged)."""
    daemon, up, _ = http_serve()
    body = b"5\r\nhello\r\n0\r\nGood: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    out, _ = raw_exchange(daemon, pki, CHUNKED_HEAD + b"Connection: close\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 400 "), out
    # The 400 can reach the client before the upstream's accept thread has listed the
    # connection mtlsd opened (seen with four test files at once on two cores).
    conn = up.wait_for_connections(1, TIMEOUT)[0]
    assert conn.eof.wait(TIMEOUT), "mtlsd never closed the upstream connection"
    sent = bytes(conn.received).split(b"\r\n\r\n", 1)[1]
    assert b"0\r\n" not in sent.replace(b"5\r\nhello", b""), sent


def test_a_crlf_after_a_body_leaves_the_connection_idle(http_serve, pki):
    """Keep-alive: a POST, its body, then a stray CRLF, and nothing more. The connection is idle:
    a drain closes it at once (the CRLF read as a request begun: it held the drain until
    drain_timeout, and the upstream's close went unwatched)."""
    daemon, _, _ = http_serve(top={"workers": 1, "shutdown": {"drain_timeout": "60s"}})
    post = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\n"
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        sock.sendall(post)
        first = read_response(reader)
        assert first is not None and first[0] == 200, first
        daemon.send_signal(signal.SIGTERM)
        sock.settimeout(TIMEOUT)
        assert sock.recv(1) == b"", "the idle connection stayed open"
    assert daemon.wait_exit() == 0


def test_a_bare_lf_after_a_response_is_forgiven(http_serve, pki):
    """An upstream's "ok\\n" past a Content-Length of 2 (a common slip) is dropped as an empty line
    after the response, as before the request side's rule was shared: the keep-alive connection
    serves the next request (it ended the connection: 1 byte after the response)."""
    daemon, _, rec = http_serve(lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\n")
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        reader = Reader(SockConn(sock))
        for target in (b"/one", b"/two"):
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            got = read_response(reader)
            assert got is not None and got[0] == 200, (target, got)
    assert [r.target for r in rec.requests] == ["/one", "/two"], rec.requests
