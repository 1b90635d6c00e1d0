"""HTTP/2 uploads towards an HTTP/1.1 upstream that answers early and drops the connection: the
request body mtlsd had taken but could not write upstream is still acknowledged to the client
(WINDOW_UPDATE), so the connection's window comes back and later uploads on it go through.

Before, a piece of body whose upstream write failed (up to 16 KiB each time) was never credited
back: the connection's 1 MiB window shrank with every such request, and once half of it had
leaked nghttp2 never sent a WINDOW_UPDATE again; every later upload on that connection stalled
(a code review's probe: at the 142nd request of 60 KB). The client is hyper-h2 (h2_client.py),
sending only what its windows allow; the upstream is a raw socket that answers 413 at once
and closes abortively (RST), so mtlsd's writes of the body fail."""

from __future__ import annotations

import socket
import struct
import time

import h2.events

from h2_client import H2Client
from http_upstream import Reader
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 10.0
BODY = memoryview(b"x" * 60000)
REQUESTS = 200   # 12 MB through a 1 MiB window: more than the window many times over


def answer_early_and_reset(conn) -> None:
    Reader(conn).until(b"\r\n\r\n")
    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                 b"Connection: close\r\n\r\n")
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


def test_body_an_upstream_never_took_is_still_acknowledged(http_serve, pki):
    daemon, _, _ = http_serve(handler=answer_early_and_reset, http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        for i in range(REQUESTS):
            sid = client.request("/up", method="POST", end_stream=False,
                                 extra=(("content-length", str(len(BODY))),))
            # The windows come back as mtlsd acknowledges what it took: frames are read until
            # there is room, for no longer than TIMEOUT.
            deadline = time.monotonic() + TIMEOUT
            while (room := client.conn.local_flow_control_window(sid)) < len(BODY):
                assert time.monotonic() < deadline and not client.closed, (
                    f"request {i}: the window stayed at {room} bytes: body mtlsd took and "
                    f"never acknowledged")
                client.pump(deadline - time.monotonic())
            assert client.send_within_window(sid, BODY) == len(BODY)
            client.conn.end_stream(sid)
            client.flush()
            client.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded,
                                                       h2.events.StreamReset))
                            and ev.stream_id == sid, TIMEOUT)
    finally:
        client.close()
