"""How mtlsd ends an HTTP/2 connection it decided to end (GOAWAY: its h2c upstream went away)
while the client is still sending: it lingers, reading and discarding, until the client closes.
Closing the socket at once would have the kernel answer the client's next bytes (or the ones
not yet read) with RST, and drop whatever of the response it had not sent yet."""

from __future__ import annotations

import time

import h2.events
import pytest

from h2_client import H2Client
from helpers import wait_request_line
from test_http2_limits import EARLY_BODY, assert_whole_early_answer, early_answering_h2c

PING_PERIOD = 0.01  # the client's pace while it sends and does not read
PINGS_AFTER = 50    # how long it goes on sending once mtlsd logged the request: ~0.5 s


def test_the_end_of_a_response_survives_a_client_still_sending_when_mtlsd_closes(serve, pki):
    """The client offers a small receive window, so most of the response waits in mtlsd's
    socket when mtlsd ends the connection (its h2c upstream dropped after a whole response).
    The client keeps sending PINGs without reading; then it reads. It gets the whole response,
    RST_STREAM(NO_ERROR), GOAWAY and the end of the stream, not a reset."""
    daemon, _ = serve(early_answering_h2c, http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    client = H2Client(daemon, pki, rcvbuf=4096)
    try:
        sid = client.request("/early-then-gone", method="POST", end_stream=False)
        client.send_within_window(sid, memoryview(b"u" * 1024))
        after = None
        pings = 0
        while after is None or pings < after + PINGS_AFTER:
            client.conn.ping(pings.to_bytes(8, "big"))
            try:
                client.flush()
            except OSError as e:  # ssl.SSLEOFError too: the kernel's RST for mtlsd's close
                pytest.fail(f"mtlsd reset the connection while the client sent PING {pings}: {e}")
            pings += 1
            if after is None and any(l.get("msg") == "request" for l in daemon.logs()):
                after = pings
            time.sleep(PING_PERIOD)
        reset = client.wait_for(lambda ev: isinstance(ev, h2.events.StreamReset)
                                and ev.stream_id == sid, 20)
        client.wait_for(lambda ev: isinstance(ev, h2.events.ConnectionTerminated), 20)
        while not client.closed:
            client.pump(20)
    finally:
        client.close()
    assert_whole_early_answer(client, sid, reset)
    line = wait_request_line(daemon, path="/early-then-gone")
    assert line["status"] == 413 and line["resp_bytes"] == len(EARLY_BODY), line
    access = daemon.wait_for_access()
    assert access["result"] == "accepted" and access["termination"] == "upstream_close", access
