"""An HTTP/1.1 upstream that answers before the request body has all arrived (413 Payload Too
Large, 401, ...) while the client is still uploading, as nginx, Go and Node do.

What the client must see (RFC 9112 9.6, RFC 9113 8.1, and what nginx does):
- HTTP/1.1 client: the whole response, then the close. mtlsd closes in stages (close_notify and
  FIN, then it reads and discards what the client still sends, until the client closes or
  timeouts.half_close), so no RST reaches the client while it writes: a RST fails the client's
  upload mid-write (http.client, requests and most clients then never read the answer) and
  discards whatever of the response mtlsd's kernel had not sent yet;
- HTTP/2 client: the whole response (END_STREAM), then RST_STREAM(NO_ERROR) so it stops
  uploading; the connection carries on.

The upstream is a raw socket so that the test decides exactly when it answers and how it closes:
`close` closes with the body unread (the kernel sends RST); `drain` half-closes, then reads until
mtlsd closes; `stall` keeps the connection open (a keep-alive answer). `drain` and `stall` read
nothing more until the client has had its answer (the `answered` event): an upstream that read
on at once could take the whole upload before mtlsd took the answer, and the test would pass on
timing alone."""

from __future__ import annotations

import os
import signal
import threading
import time

import h2.errors
import h2.events
import pytest

from h2_client import H2Client, status_of
from helpers import read_head, wait_request_line
from http_upstream import Reader
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http_mode import SockConn, https, read_response

TIMEOUT = 10.0
UPLOAD = os.urandom(1024 * 1024) * 16             # far beyond every socket buffer on the way
SMALL = b"too large\n"
# More than a client that is still writing has room for in its receive buffer: the part mtlsd's
# kernel still holds when mtlsd closes is what a RST destroys.
LARGE = b"too large\n" * 100_000
HOWS = ["close", "drain", "stall"]


def answer_for(how: str, large: bool) -> bytes:
    # An upstream that close()s with unread input resets its own connection too, which discards
    # what its kernel had not sent yet: only a small answer is sure to leave it whole.
    return LARGE if large and how != "close" else SMALL


def early_answerer(how: str, answered: threading.Event, large: bool = False):
    """Answers a POST with 413 as soon as its head (and whatever came with it) is in; answers
    `GET /after` with 200 "ok"."""
    answer = answer_for(how, large)

    def handle(conn) -> None:
        buf = read_head(conn)
        if b"\r\n\r\n" not in buf:
            return  # closed before its head ended
        if buf.startswith(b"GET /after"):
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            conn.shutdown_write()
            while conn.sock.recv(65536):
                pass
            return
        conn.sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: %d\r\n%s\r\n" % (
                              len(answer), b"Connection: close\r\n" if how != "stall" else b"")
                          + answer)
        if how == "close":
            return  # Upstream._run closes the socket with the body unread: RST
        if how == "drain":
            conn.shutdown_write()
        answered.wait(3 * TIMEOUT)
        try:
            while conn.sock.recv(65536):  # until mtlsd closes
                pass
        except OSError:
            pass
    return handle


@pytest.mark.parametrize("how", HOWS)
def test_an_early_answer_reaches_an_http11_client_still_uploading(serve, pki, how):
    """http.client sends the whole body before it reads: it gets the 413 only when mtlsd does
    not reset the connection under it (a lingering close, as nginx's). A small answer, so that
    mtlsd's write of it completes at once whether the client reads or not (a large one that
    mtlsd's socket cannot take whole waits for the client, whose upload then goes on to its end,
    and the test would pass or fail on the size of the socket buffers)."""
    answered = threading.Event()
    daemon, _ = serve(early_answerer(how, answered), http={"protocols": ["http/1.1"]})
    conn = https(daemon, pki, timeout=TIMEOUT)
    local = "%s:%d" % conn.sock.getsockname()[:2]
    try:
        try:
            conn.request("POST", "/upload", body=UPLOAD,
                         headers={"Content-Type": "application/octet-stream"})
        except OSError as e:  # SSLEOFError / BrokenPipeError / ConnectionResetError
            pytest.fail(f"the upload failed under the client ({e!r}): mtlsd closed the "
                        "connection with the client's bytes unread, so its kernel sent RST")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        answered.set()
        conn.close()
    assert resp.status == 413
    assert body == SMALL, f"{len(body)} of {len(SMALL)} bytes of the answer"
    line = wait_request_line(daemon, path="/upload")
    assert line["status"] == 413 and line["resp_bytes"] == len(SMALL), line
    assert line["detail"] == "answered before the request body ended", line
    # The lingering ended when the client closed, long before timeouts.half_close (30 s).
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line
    assert line["duration_ms"] < 10_000, line


def test_a_refused_upload_is_read_to_its_end_not_reset(serve, pki):
    """mtlsd's own refusals close the same way: a 16 MiB upload without a Host gets its 400
    once http.client has sent it all, not a reset halfway (as for every refusal nginx makes)."""
    daemon, up = serve(http={"protocols": ["http/1.1"]})
    conn = https(daemon, pki, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/upload", skip_host=True)
        conn.putheader("Content-Length", str(len(UPLOAD)))
        conn.endheaders()
        try:
            conn.send(UPLOAD)
        except OSError as e:
            pytest.fail(f"the upload failed under the client ({e!r}): reset before the 400")
        resp = conn.getresponse()
        assert resp.status == 400 and b"Bad Request" in resp.read()
    finally:
        conn.close()
    assert up.total_received() == 0  # connected (HTTP mode connects first), never sent a byte


def test_a_client_quiet_after_its_early_answer_is_let_go_after_5s(serve, pki):
    """A client that reads its answer and then parks the connection (a pool) neither sends nor
    closes: the lingering ends after 5 s without a byte from it (nginx's lingering_timeout), not
    after timeouts.half_close (30 s)."""
    answered = threading.Event()
    daemon, _ = serve(early_answerer("stall", answered), http={"protocols": ["http/1.1"]})
    with open_tls(daemon.addr(), client_context(pki, "client")) as sock:
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % len(UPLOAD) + UPLOAD[:65536])
        status, _, body = read_response(Reader(SockConn(sock)))
        assert (status, body) == (413, SMALL)
        answered.set()
        line = daemon.wait_for_access(client=local, timeout=20)   # still connected, quiet
    assert 4_000 <= line["duration_ms"] < 10_000, line


def test_a_drain_does_not_wait_for_a_lingering_client(serve, pki):
    """A client that has its early answer but neither sends nor closes would hold the lingering
    close for timeouts.half_close (30 s), and shutdown with it (drain_timeout, 30 s): a drain
    ends the lingering at once instead, as nginx's exit does."""
    answered = threading.Event()
    daemon, _ = serve(early_answerer("drain", answered), http={"protocols": ["http/1.1"]})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = fmt_addr(sock.getsockname())
    try:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % len(UPLOAD) + UPLOAD[:64 * 1024])
        reader = Reader(SockConn(sock))
        status, _, body = read_response(reader)
        assert (status, body) == (413, SMALL)
        assert read_response(reader) is None  # close_notify and FIN: mtlsd lingers now
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(5) == 0
    finally:
        answered.set()
        sock.close()
    line = daemon.wait_for_access(client=local)
    assert line["termination"] == "upstream_close", line


@pytest.mark.parametrize("how", HOWS)
def test_an_early_http11_answer_stops_the_http2_upload(serve, pki, how):
    """The HTTP/2 client uploads as the windows allow: it gets the whole 413, then
    RST_STREAM(NO_ERROR) telling it to stop (as from an h2c upstream, test_http2_limits), and
    the connection carries on."""
    answered = threading.Event()
    daemon, _ = serve(early_answerer(how, answered, large=True), http={"protocols": ["h2"]})
    answer = answer_for(how, large=True)
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False,
                             extra=(("content-length", str(len(UPLOAD))),))
        view = memoryview(UPLOAD)
        sent = 0

        def reset_of_mine():
            return next((ev for ev in client.events if isinstance(ev, h2.events.StreamReset)
                         and ev.stream_id == sid), None)

        deadline = time.monotonic() + TIMEOUT
        while reset_of_mine() is None and time.monotonic() < deadline and not client.closed:
            if sent < len(view):
                sent += client.send_within_window(sid, view[sent:sent + 1024 * 1024])
            client.pump(0.05)  # one read, or 50 ms without one: then the window is looked at
        answered.set()
        reset = reset_of_mine()
        mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
        assert status_of(mine) == 413, mine
        assert bytes(client.bodies[sid]) == answer, len(client.bodies[sid])
        assert any(isinstance(ev, h2.events.StreamEnded) for ev in mine), mine
        assert reset is not None, (
            f"no RST_STREAM after the whole response: the client uploaded {sent} bytes, then "
            f"{'waited for window' if sent < len(view) else 'finished'} (RFC 9113 8.1)")
        assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR, reset
        assert sent < len(view), "the whole upload went through: nothing was asked to stop"
        after = client.request("/after")
        assert client.response(after, TIMEOUT) == (200, b"ok")
    finally:
        answered.set()
        client.close()
    line = wait_request_line(daemon, path="/upload")
    assert line["status"] == 413 and line["resp_bytes"] == len(answer), line
