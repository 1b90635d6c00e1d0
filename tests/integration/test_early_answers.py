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
import threading
import time

import h2.errors
import h2.events
import pytest

from h2_client import H2Client, status_of
from test_http2_limits import wait_request_line

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
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.sock.recv(65536)
            if not data:
                return
            buf += data
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
