"""HTTP/2 resets the client provokes (MadeYouReset, CVE-2025-8671) count as premature resets.

test_http2_rapid_reset.py bounds the streams a client resets itself (RST_STREAM). A client can
have the server reset them instead: a request whose frames break HTTP/2's rules, here a POST
declaring `content-length: 0` followed by one byte of DATA, makes nghttp2 reset the stream with
PROTOCOL_ERROR. The client pays as little as for a reset of its own, and Debian's nghttp2 (1.52)
counts only resets it receives: before, such streams were never bounded (a code review sent
2,000 of them through to an h2c upstream, and 600 to HTTP/1.1 upstream connections, without a
GOAWAY). Now the 200th closes the connection exactly as the 200th RST_STREAM does: GOAWAY
(ENHANCE_YOUR_CALM), termination rate_limited, the counter, and a new connection is served.

Unlike a client's own reset, such a stream may reach the upstream: nghttp2 resets it only when
its RST_STREAM is written, after the read that brought it (README, "HTTP/2 and gRPC"). The
upstream sees at most the streams taken before the GOAWAY."""

from __future__ import annotations

import struct

from h2_frames import (DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM, _hpack_literal,
                       connect_h2, frame)
from mtlsd_harness import client_context, fmt_addr
from test_http2_rapid_reset import (BATCH, H2C, PING, RAPID_RESET_FLOOR, TIMEOUT, FrameReader,
                                    H2cUpstream, assert_a_new_connection_is_served,
                                    assert_closed_for_rapid_reset, check_goaway, flood_lines)

PROVOKING_BLOCK = b"".join(_hpack_literal(k, v) for k, v in (
    (":method", "POST"), (":scheme", "https"), (":authority", "localhost"), (":path", "/flood"),
    ("content-length", "0")))
PROTOCOL_ERROR = 0x1


def provoked_reset(stream: int) -> bytes:
    """A POST declaring no body, then a byte of body: nghttp2 resets it (PROTOCOL_ERROR)."""
    return (frame(HEADERS, END_HEADERS, stream, PROVOKING_BLOCK)
            + frame(DATA, END_STREAM, stream, b"x"))


def test_resets_the_client_provokes_are_bounded_as_its_own_are(serve, pki):
    """Batches of provoked resets, each write ending in a PING: mtlsd resets each stream
    (PROTOCOL_ERROR), and the batch holding the RAPID_RESET_FLOOR-th is answered with
    GOAWAY(ENHANCE_YOUR_CALM) and the connection's end."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    reader = FrameReader(client.sock)
    flood_up = upstream.connection(0)
    sent = 0
    try:
        # Without the bound this goes on to 5 times the floor and the assertion below fails.
        while reader.goaway() is None and sent < 5 * RAPID_RESET_FLOOR:
            client.sock.sendall(b"".join(provoked_reset(1 + 2 * (sent + i)) for i in range(BATCH))
                                + frame(PING, 0, 0, struct.pack(">Q", sent + BATCH)))
            sent += BATCH
            assert reader.until(lambda: reader.pinged(sent) or reader.goaway() is not None), \
                f"neither a PING ACK nor a GOAWAY after {sent} streams (eof: {reader.eof})"
        reader.until_eof()
    finally:
        client.sock.close()

    resets = [f for f in reader.frames if f.type == RST_STREAM]
    assert resets and {struct.unpack(">I", f.payload)[0] for f in resets} == {PROTOCOL_ERROR}, \
        "the streams were not reset by mtlsd (the probe provokes nothing)"
    last = check_goaway(reader, 1)   # the 200th is the last stream of the second batch
    assert sent == 2 * BATCH, f"GOAWAY after {sent} streams, not with the batch holding {last}"
    assert reader.eof, "mtlsd kept the connection open after its GOAWAY"

    assert_closed_for_rapid_reset(daemon, daemon.wait_for_access(client=local))
    flood_lines(daemon, local, list(range(1, 2 * sent, 2)))
    upstream.wait("the flood's connection stays open", lambda: flood_up["closed"])
    assert len(flood_up["requests"]) <= sent, len(flood_up["requests"])
    assert_a_new_connection_is_served(daemon, pki, upstream)
