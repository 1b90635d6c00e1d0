"""An h2c upstream that commits an HTTP/2 connection error and then keeps its connection open.

Here: a PUSH_PROMISE, which mtlsd's SETTINGS_ENABLE_PUSH=0 forbids (PROTOCOL_ERROR), or a
header block HPACK cannot decode (COMPRESSION_ERROR), in answer to a request. mtlsd's nghttp2
answers GOAWAY with that error and takes nothing more from the connection; RFC 9113 5.4.1 has
the sender of such a GOAWAY close the connection. mtlsd then treats the upstream connection as
lost, as one the upstream closed: the stream under way gets a 502 at once (a gRPC call its
Trailers-Only UNAVAILABLE), whose access line says what the upstream did wrong; the upstream's
connection is closed (it reads EOF after the GOAWAY); the client is sent GOAWAY(NO_ERROR) and a
stream it opens on the same connection is refused, never sent up; a new client connection gets a
new upstream connection. Before (review), nghttp2's GOAWAY went out and nothing else happened:
the stream under way waited for `stream_idle_timeout` (5 minutes by default) and got a 504,
every new stream was refused with REFUSED_STREAM and no GOAWAY ("upstream reset the stream:
REFUSED_STREAM", which the upstream never sent), and the upstream connection stayed open until
the client left.

The first upstream connection is raw frames (hyper-h2 would send neither frame); later ones are
hyper-h2, answering 200 with the request's path."""

from __future__ import annotations

import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import hpack
import pytest

from h2_client import H2Client
from h2_frames import (ACK, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PREFACE, SETTINGS,
                       Frame, frame, goaway_fields, read_frame)
from helpers import wait_request_line
from test_http2_upstream_changes import (H2C, TIMEOUT, assert_a_new_connection_is_served,
                                         assert_refused_not_answered, assert_told_to_reconnect,
                                         open_conversation)

PUSH_PROMISE = 0x5
PADDED, PRIORITY = 0x8, 0x20
PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
COMPRESSION_ERROR = h2.errors.ErrorCodes.COMPRESSION_ERROR
UNAVAILABLE = 14
# Far beyond every wait here: an answer that comes is the fix's, not the idle timeout's.
LONG_IDLE = {**H2C, "stream_idle_timeout": "5m"}

# how -> (the frame answering the request on `sid`, the GOAWAY's error code, the access line's
# detail)
ERRORS = {
    # Promised stream 2, header block ":method GET, :scheme http, :path /" (static indices).
    "push_promise": (lambda sid: frame(PUSH_PROMISE, END_HEADERS, sid,
                                       b"\x00\x00\x00\x02\x82\x86\x84"),
                     PROTOCOL_ERROR,
                     "upstream: HTTP/2 protocol error by the upstream (GOAWAY PROTOCOL_ERROR "
                     "sent): PUSH_PROMISE: push disabled"),
    # An indexed field whose index (2^21 and more) no table has.
    "bad_hpack": (lambda sid: frame(HEADERS, END_HEADERS, sid, b"\xbf\xff\xff\x0f"),
                  COMPRESSION_ERROR,
                  "upstream: HTTP/2 protocol error by the upstream (GOAWAY COMPRESSION_ERROR "
                  "sent): a header block that does not decode (HPACK)"),
}


class FrameReader:
    """Frames from an upstream connection, read whole."""

    def __init__(self, conn):
        self.conn = conn
        self.buffer = b""

    def exact(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            data = self.conn.recv()
            if not data:
                return None
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def next_frame(self) -> Frame | None:
        """The next frame; None at EOF."""
        return read_frame(self.exact)


class ErringUpstream:
    """An h2c upstream whose first connection answers its first request, once whole, with the
    frame of ERRORS[how], then reads on, keeping its end open, until mtlsd closes the connection
    (`eof` set then). It records the requests' paths (`paths`) and the frames mtlsd sent after
    the error (`after`: GOAWAY's fields, or any other frame's type). Every later connection
    answers each request with 200 and its path."""

    def __init__(self, how: str):
        self.how = how
        self.paths: list[str] = []
        self.after: list = []
        self.eof = threading.Event()
        self.problem: list[str] = []
        self.connections = 0

    def __call__(self, conn) -> None:
        self.connections += 1
        if self.connections > 1:
            return answer_with_path(conn)
        conn.sock.settimeout(3 * TIMEOUT)  # the unfixed daemon kept it open for good
        reader = FrameReader(conn)
        if reader.exact(len(PREFACE)) != PREFACE:
            self.problem.append("no client preface")
            return
        conn.sendall(frame(SETTINGS, 0, 0, b""))
        decoder = hpack.Decoder()
        erred = False
        try:
            while (f := reader.next_frame()) is not None:
                if f.type == SETTINGS and not f.flags & ACK:
                    conn.sendall(frame(SETTINGS, ACK, 0, b""))
                if erred:
                    self.after.append(goaway_fields(f) if f.type == GOAWAY else f.type)
                    continue
                if f.type == HEADERS:
                    self.paths.append(dict(decoder.decode(block_of(f), raw=False))[":path"])
                if f.type in (HEADERS, DATA) and f.flags & END_STREAM:  # the request is whole
                    conn.sendall(ERRORS[self.how][0](f.stream))
                    erred = True
        except TimeoutError:
            self.problem.append(f"mtlsd kept the connection open for {3 * TIMEOUT}s")
            return
        self.eof.set()


def block_of(f: Frame) -> bytes:
    """A HEADERS frame's header block fragment (END_HEADERS: the whole block)."""
    payload = f.payload
    if f.flags & PADDED:
        payload = payload[1:len(payload) - payload[0]]
    if f.flags & PRIORITY:
        payload = payload[5:]
    return payload


def answer_with_path(conn) -> None:
    h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                             header_encoding="utf-8"))
    h.initiate_connection()
    conn.sendall(h.data_to_send())
    while data := conn.recv():
        for ev in h.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                h.send_headers(ev.stream_id, [(":status", "200")])
                h.send_data(ev.stream_id, dict(ev.headers)[":path"].encode(), end_stream=True)
        conn.sendall(h.data_to_send())


def assert_upstream_closed_after_goaway(upstream: ErringUpstream) -> None:
    """mtlsd sent GOAWAY with the error's code, nothing else (but the ACK of the upstream's
    SETTINGS, which may follow the request), and closed the connection."""
    closed = upstream.eof.wait(TIMEOUT)
    assert not upstream.problem, upstream.problem
    assert closed, f"mtlsd never closed the upstream connection; it sent {upstream.after}"
    code = ERRORS[upstream.how][1]
    sent = [f for f in upstream.after if f != SETTINGS]
    assert len(sent) == 1 and sent[0][1] == code, (
        f"not one GOAWAY({code!r}) before the close: {upstream.after}")


@pytest.mark.parametrize("how", sorted(ERRORS))
def test_a_connection_error_of_the_upstream_loses_its_connection(serve, pki, how):
    """/first goes up and is answered with the error: the client gets a 502 for it at once (well
    before stream_idle_timeout), its access line names the error; the upstream reads mtlsd's
    GOAWAY and then EOF. /second, on the same client connection afterwards, is refused (never
    sent up) and the client is told to reconnect (GOAWAY(NO_ERROR)); a new client connection is
    served over a new upstream connection."""
    upstream = ErringUpstream(how)
    daemon, up = serve(upstream, http=LONG_IDLE)
    conv = open_conversation(daemon, pki)
    try:
        conv.get(1, "/first")
        assert conv.read_until(lambda c: c.over(1), TIMEOUT), (
            f"/first unanswered for {TIMEOUT}s after the upstream's error: {conv.describe(1)}")
        assert (conv.status(1), conv.bodies[1], 1 in conv.ended) == \
            (502, b"Bad Gateway\n", True), conv.describe(1)
        assert_upstream_closed_after_goaway(upstream)
        conv.get(3, "/second")
        conv.read_until(lambda c: c.over(3), TIMEOUT)
        assert_refused_not_answered(conv, 3, "/second")
        assert_told_to_reconnect(conv)
    finally:
        conv.client.sock.close()
    line = wait_request_line(daemon, path="/first")
    assert (line["status"], line["detail"]) == (502, ERRORS[how][2]), line
    assert upstream.paths == ["/first"], upstream.paths
    assert_a_new_connection_is_served(daemon, pki, up, 2)


def test_a_grpc_call_under_way_hears_the_upstreams_connection_error(serve, pki):
    """A gRPC call whose upstream answers with a PUSH_PROMISE ends at once with a Trailers-Only
    UNAVAILABLE whose grpc-message names the error (what a lost h2c connection gives a call); its
    access line says 502 and grpc_status 14; the upstream's connection is closed."""
    upstream = ErringUpstream("push_promise")
    daemon, _ = serve(upstream, http=LONG_IDLE)
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/pkg.Service/Call", method="POST", end_stream=False,
                             extra=(("content-type", "application/grpc"), ("te", "trailers")))
        client.conn.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
        client.flush()
        client.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
                        and ev.stream_id == sid, TIMEOUT)
        heads = [ev for ev in client.events if isinstance(ev, h2.events.ResponseReceived)
                 and ev.stream_id == sid]
        assert len(heads) == 1 and heads[0].stream_ended is not None, client.events
        fields = dict(heads[0].headers)
    finally:
        client.close()
    why = ERRORS["push_promise"][2]
    assert (fields[":status"], fields["grpc-status"]) == ("200", str(UNAVAILABLE)), fields
    assert fields["grpc-message"] == why.replace("%", "%25"), fields
    line = wait_request_line(daemon, path="/pkg.Service/Call")
    assert (line["status"], line["grpc_status"], line["detail"]) == (502, UNAVAILABLE, why), line
    assert_upstream_closed_after_goaway(upstream)
