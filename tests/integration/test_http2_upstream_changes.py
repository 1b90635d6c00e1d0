"""An HTTP/2 client in front of an h2c upstream that goes away, and HTTP/2 requests that say
`Expect: 100-continue`.

An h2c upstream that sends GOAWAY (a restart, a maximum connection age) or closes its
connection takes no new stream. mtlsd keeps one upstream connection per client connection, so
the client must be told to reconnect: GOAWAY(NO_ERROR). A stream the upstream did not take
(RST_STREAM(REFUSED_STREAM), or above its GOAWAY's last-stream-id, RFC 9113 6.8 and 8.7), and a
stream that arrives once the upstream is gone, was processed by nobody: it is refused to the
client (RST_STREAM(REFUSED_STREAM), or left above mtlsd's own GOAWAY's last-stream-id), which a
client may retry on its new connection, never answered with a 502 of mtlsd's making (which a
client must not retry). A response already under way finishes; a new client connection gets a
new upstream connection. Before, every stream after the upstream's GOAWAY or close was a 502
and the client was never told to go.

`Expect: 100-continue` from an HTTP/2 client is answered by mtlsd itself (a `:status 100`
HEADERS before the body) and not sent up, as the HTTP/1.1 path does: an HTTP/1.1 upstream's
100 is not passed on to an HTTP/2 client, nor is an h2c upstream's, so an upstream-side 100
never reached the client and it waited out its expect timeout (curl: 1 s, or as configured).

The client is raw frames over TLS (h2_frames.py), with the HPACK state decoded here, where
frames follow a GOAWAY (hyper-h2 refuses every frame after one); hyper-h2 (h2_client.py)
elsewhere. The upstreams are hyper-h2 h2c servers written here, plus raw GOAWAY frames (hyper-h2
sends nothing after its own)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections import defaultdict

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest

from h2_client import H2Client
from h2_frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM,
                       H2Client as FrameClient, connect_h2, frame, goaway_fields)
from http_upstream import HttpRecorder
from mtlsd_harness import client_context

TIMEOUT = 10.0
MAYBE = 5.0      # a wait for something the fixed daemon sends at once and the old one never does
H2C = {"upstream_protocol": "h2c", "protocols": ["h2"]}
NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
PADDED, PRIORITY = 0x8, 0x20
PING, PING_ACK = 0x6, 0x1


# --- the client: raw frames, decoded ------------------------------------------------------

class Conversation:
    """Everything mtlsd sends on one raw-frame client connection, by stream: response heads
    (decoded with the connection's one HPACK state, so every block is decoded in order), bodies,
    END_STREAM, RST_STREAM codes; and the connection's GOAWAY frames and EOF."""

    def __init__(self, client: FrameClient):
        self.client = client
        self.decoder = hpack.Decoder()
        self.heads: dict[int, list[list[tuple[str, str]]]] = defaultdict(list)  # fields in order
        self.bodies: dict[int, bytes] = defaultdict(bytes)
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaways: list[tuple[int, int]] = []   # (last-stream-id, error code)
        self.ping_acks: list[bytes] = []           # opaque data of each PING ACK
        self.eof = False
        self._block = b""
        self._block_flags = 0

    def get(self, stream: int, path: str) -> None:
        """GET `path` on `stream` (HEADERS with END_STREAM); a connection mtlsd already closed
        takes nothing, which the reads that follow show."""
        try:
            self.client.get(stream, "localhost", path)
        except OSError:
            pass

    def read_until(self, done, timeout: float) -> bool:
        """Reads frames until `done(self)`; False at EOF or when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return False
            self.client.sock.settimeout(left)
            try:
                f = self.client.next_frame()
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                f = None
            if f is None:
                self.eof = True
            else:
                self._take(f)
        return True

    def _take(self, f) -> None:
        if f.type in (HEADERS, CONTINUATION):
            payload = f.payload
            if f.type == HEADERS:
                self._block_flags = f.flags
                if f.flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if f.flags & PRIORITY:
                    payload = payload[5:]
            self._block += payload
            if f.flags & END_HEADERS:
                self.heads[f.stream].append(self.decoder.decode(self._block, raw=False))
                self._block = b""
                if self._block_flags & END_STREAM:
                    self.ended.add(f.stream)
        elif f.type == DATA:
            payload = f.payload
            if f.flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            self.bodies[f.stream] += payload
            if f.flags & END_STREAM:
                self.ended.add(f.stream)
        elif f.type == RST_STREAM:
            self.resets[f.stream] = int.from_bytes(f.payload[:4], "big")
        elif f.type == GOAWAY:
            self.goaways.append(goaway_fields(f))
        elif f.type == PING and f.flags & PING_ACK:
            self.ping_acks.append(f.payload)

    # --- what happened to a stream ---

    def over(self, stream: int) -> bool:
        """The stream has its outcome: ended, reset, or implicitly refused by a GOAWAY whose
        last-stream-id is below it (RFC 9113 6.8: never processed)."""
        return (stream in self.ended or stream in self.resets
                or any(last < stream for last, _ in self.goaways))

    def status(self, stream: int):
        statuses = [int(dict(h)[":status"]) for h in self.heads[stream]]
        finals = [status for status in statuses if status >= 200]
        return finals[0] if finals else None

    def refused(self, stream: int) -> bool:
        """Not processed, so safe to retry (RFC 9113 8.7): RST_STREAM(REFUSED_STREAM), or above
        the last-stream-id of mtlsd's GOAWAY, with no response head either way."""
        if self.heads[stream]:
            return False
        if stream in self.resets:
            return self.resets[stream] == REFUSED_STREAM
        return any(last < stream for last, _ in self.goaways)

    def describe(self, stream: int) -> str:
        return (f"stream {stream}: heads {self.heads[stream]}, body {self.bodies[stream][:40]!r}, "
                f"reset {self.resets.get(stream)}, GOAWAYs {self.goaways}, eof {self.eof}")


def open_conversation(daemon, pki) -> Conversation:
    return Conversation(connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT))


def assert_refused_not_answered(conv: Conversation, stream: int, path: str) -> None:
    assert not conv.heads[stream], (
        f"{path} was answered by mtlsd with {conv.status(stream)} instead of being refused "
        f"(RST_STREAM(REFUSED_STREAM)): {conv.describe(stream)}")
    assert conv.refused(stream), f"{path} not refused: {conv.describe(stream)}"


def assert_told_to_reconnect(conv: Conversation) -> None:
    """GOAWAY(NO_ERROR) came, within MAYBE seconds of the streams' ends."""
    conv.read_until(lambda c: c.goaways, MAYBE)
    assert conv.goaways, f"no GOAWAY: the client was never told to reconnect (eof {conv.eof})"
    assert all(code == NO_ERROR for _, code in conv.goaways), conv.goaways


def get_once(daemon, pki, path: str):
    """One GET on stream 1 of a new client connection, read until it is over; the
    conversation (closed)."""
    conv = open_conversation(daemon, pki)
    try:
        conv.get(1, path)
        assert conv.read_until(lambda c: c.over(1), TIMEOUT), conv.describe(1)
    finally:
        conv.client.sock.close()
    return conv


def assert_a_new_connection_is_served(daemon, pki, up, connections: int) -> None:
    """A new client connection is served (200 "/again") over a new upstream connection."""
    conv = get_once(daemon, pki, "/again")
    assert (conv.status(1), conv.bodies[1]) == (200, b"/again"), conv.describe(1)
    assert len(up.connections) == connections, len(up.connections)


# --- the upstream: hyper-h2 h2c, plus raw frames hyper-h2 would not send --------------------

def goaway_frame(last_stream_id: int) -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, NO_ERROR))


class GoingAway:
    """An h2c upstream whose first connection goes away as `how` says; every later connection
    answers each request with 200 and its path. What each connection received is kept in
    `paths` (one list per connection, in order).

    how = "goaway":  once /first and /second arrived: GOAWAY(NO_ERROR) naming /first's stream,
                     so /second is above it (unprocessed, RFC 9113 6.8);
    how = "refused": RST_STREAM(REFUSED_STREAM) for /second, then GOAWAY naming /second's
                     stream (only the reset refuses it);
    how = "midway":  /first alone: its head and "fir", GOAWAY naming it, then "st" and
                     END_STREAM (a response under way when the upstream goes away);
    how = "close":   /first alone, answered; then FIN, no GOAWAY.
    For "goaway" and "refused", a PING follows the GOAWAY; its ACK (mtlsd's nghttp2 read the
    GOAWAY before it) sets `goaway_read`, and /first is answered once `release` is set.
    Every way ends with FIN, then reading until mtlsd closes its end (`gone` is set then).
    What goes out after the GOAWAY is raw frames: hyper-h2 sends nothing after one it
    received, and mtlsd may send one."""

    def __init__(self, how: str):
        self.how = how
        self.paths: list[list[str]] = []
        self.goaway_read = threading.Event()
        self.release = threading.Event()
        self.gone = threading.Event()
        self.problem: list[str] = []

    def __call__(self, conn) -> None:
        first_connection = not self.paths
        paths: list[str] = []
        self.paths.append(paths)
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        conn.sock.settimeout(TIMEOUT)
        ids: dict[str, int] = {}
        for ev in self._events(conn, h, paths):
            if not isinstance(ev, h2.events.RequestReceived):
                continue
            ids[paths[-1]] = ev.stream_id
            if not first_connection:
                h.send_headers(ev.stream_id, [(":status", "200")])
                h.send_data(ev.stream_id, paths[-1].encode(), end_stream=True)
                conn.sendall(h.data_to_send())
            elif self.how == "midway":
                conn.sendall(raw_response(ev.stream_id, b"fir", end=False)
                             + goaway_frame(ev.stream_id)
                             + frame(DATA, END_STREAM, ev.stream_id, b"st"))
                return self._finish(conn, h, paths)
            elif self.how == "close":
                conn.sendall(raw_response(ev.stream_id, b"first"))
                return self._finish(conn, h, paths)
            elif "/first" in ids and "/second" in ids:
                return self._go_away(conn, h, paths, ids["/first"], ids["/second"])

    def _events(self, conn, h, paths: list[str], send: bool = True):
        """hyper-h2's events for what arrives, until EOF or a reset (`paths` gets each request's
        :path); after a frame hyper-h2 refuses (any after a GOAWAY), only reads on."""
        parse = True
        while True:
            try:
                data = conn.recv()
            except (ConnectionError, TimeoutError) as e:
                if isinstance(e, TimeoutError):
                    self.problem.append(f"mtlsd sent nothing for {TIMEOUT}s")
                return
            if not data:
                return
            if not parse:
                continue
            try:
                events = h.receive_data(data)
            except h2.exceptions.ProtocolError:
                parse = False
                continue
            if send:
                conn.sendall(h.data_to_send())
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    paths.append(dict(ev.headers)[":path"])
                yield ev

    def _go_away(self, conn, h, paths: list[str], first: int, second: int) -> None:
        if second < first:
            self.problem.append(f"/second came up before /first ({second} < {first})")
        if self.how == "refused":
            h.reset_stream(second, REFUSED_STREAM)
            conn.sendall(h.data_to_send())
        conn.sendall(goaway_frame(first if self.how == "goaway" else second))
        h.ping(b"goaway!!")
        conn.sendall(h.data_to_send())
        for ev in self._events(conn, h, paths):
            if isinstance(ev, h2.events.PingAckReceived):
                self.goaway_read.set()
                break
        if self.release.wait(TIMEOUT):
            conn.sendall(raw_response(first, b"first"))
        self._finish(conn, h, paths)

    def _finish(self, conn, h, paths: list[str]) -> None:
        """FIN, then read (recording any request that still comes) until mtlsd closes."""
        conn.shutdown_write()
        for _ in self._events(conn, h, paths, send=False):
            pass
        if not self.problem:
            self.gone.set()


def raw_response(sid: int, body: bytes, end: bool = True) -> bytes:
    """`:status 200` (HPACK static index 8: no table state involved) and `body`."""
    return (frame(HEADERS, END_HEADERS, sid, b"\x88")
            + frame(DATA, END_STREAM if end else 0, sid, body))


# --- h2c upstream going away -----------------------------------------------------------------

def going_away(serve, how: str):
    upstream = GoingAway(how)
    daemon, up = serve(upstream, http=H2C)
    return daemon, up, upstream



@pytest.mark.parametrize("how", ["goaway", "refused"])
def test_streams_the_upstream_did_not_take_are_refused_and_the_client_told_to_go(serve, pki, how):
    """Two streams up, /first and /second; the upstream then goes away without taking /second
    (above its GOAWAY's last-stream-id, or reset REFUSED_STREAM), with /first still to answer.
    Once mtlsd read that GOAWAY, a third stream /late arrives. /second and /late are refused,
    not answered 502; /late never reaches the upstream; /first, answered after the GOAWAY, comes
    whole; the client gets GOAWAY(NO_ERROR); a new client connection is served (by a new
    upstream connection)."""
    daemon, up, upstream = going_away(serve, how)
    conv = open_conversation(daemon, pki)
    try:
        conv.get(1, "/first")
        conv.get(3, "/second")
        assert upstream.goaway_read.wait(TIMEOUT), f"the upstream never had its PING acked: " \
            f"{upstream.paths}"
        conv.get(5, "/late")
        conv.read_until(lambda c: c.over(3) and c.over(5), TIMEOUT)
        upstream.release.set()
        conv.read_until(lambda c: c.over(1), TIMEOUT)
        assert_refused_not_answered(conv, 3, "/second")
        assert_refused_not_answered(conv, 5, "/late")
        assert (conv.status(1), conv.bodies[1], 1 in conv.ended) == (200, b"first", True), \
            conv.describe(1)
        assert 1 not in conv.resets, conv.describe(1)
        assert_told_to_reconnect(conv)
    finally:
        upstream.release.set()
        conv.client.sock.close()
    assert not upstream.problem, upstream.problem
    assert upstream.paths[0] == ["/first", "/second"], upstream.paths
    assert_a_new_connection_is_served(daemon, pki, up, 2)


def test_a_stream_after_the_upstream_closed_is_refused_and_the_client_told_to_go(serve, pki):
    """The upstream answers /first, then closes its connection without a GOAWAY. Once mtlsd has
    closed its end too (it read the close), a stream /late arrives: it is refused (or left above
    mtlsd's GOAWAY's last-stream-id), not answered 502, and the client gets GOAWAY(NO_ERROR).
    A new client connection is served by a new upstream connection."""
    daemon, up, upstream = going_away(serve, "close")
    conv = open_conversation(daemon, pki)
    try:
        conv.get(1, "/first")
        assert conv.read_until(lambda c: c.over(1), TIMEOUT), conv.describe(1)
        assert (conv.status(1), conv.bodies[1]) == (200, b"first"), conv.describe(1)
        assert upstream.gone.wait(TIMEOUT), "mtlsd never closed its end of the upstream connection"
        conv.get(3, "/late")
        conv.read_until(lambda c: c.over(3), MAYBE)
        assert_refused_not_answered(conv, 3, "/late")
        assert_told_to_reconnect(conv)
    finally:
        conv.client.sock.close()
    assert upstream.paths[0] == ["/first"], upstream.paths
    assert_a_new_connection_is_served(daemon, pki, up, 2)


def test_a_response_under_way_when_the_upstream_says_goaway_completes(serve, pki):
    """Not to regress: the upstream sends /first's head and part of its body, then GOAWAY naming
    it, then the rest. The client gets the whole response, ended cleanly (no reset, whatever
    else mtlsd tells it), and a new client connection is served by a new upstream connection."""
    daemon, up, upstream = going_away(serve, "midway")
    conv = get_once(daemon, pki, "/first")
    assert (conv.status(1), conv.bodies[1], 1 in conv.ended) == (200, b"first", True), \
        conv.describe(1)
    assert 1 not in conv.resets, conv.describe(1)
    assert_a_new_connection_is_served(daemon, pki, up, 2)


class OneStreamAtATime:
    """An h2c upstream allowing one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1): mtlsd
    holds a second request's head queued, unsent. Once `release` is set, it sends GOAWAY naming
    the first stream, then answers that one (raw frames: hyper-h2 sends nothing after a
    GOAWAY)."""

    def __init__(self):
        self.paths: list[str] = []
        self.got_first = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        first = None
        try:
            while first is None and (data := conn.recv()):
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.paths.append(dict(ev.headers)[":path"])
                        first = ev.stream_id
                conn.sendall(h.data_to_send())
            self.got_first.set()
            if first is None or not self.release.wait(TIMEOUT):
                return
            conn.sendall(goaway_frame(first) + raw_response(first, b"first"))
            while conn.recv():
                pass
        except OSError:
            pass


def test_a_head_queued_behind_the_upstreams_stream_limit_is_refused_at_its_goaway(serve, pki):
    """/second waits in mtlsd's queue for the upstream's one stream slot when the upstream says
    GOAWAY naming /first: the upstream never saw /second, so the client gets it refused
    (REFUSED_STREAM, or above mtlsd's GOAWAY), which it may retry, not a 502 of mtlsd's making
    (review of a6319f8, which took nghttp2's unsent head for one too large to send)."""
    upstream = OneStreamAtATime()
    daemon, _ = serve(upstream, http=H2C)
    conv = open_conversation(daemon, pki)
    try:
        conv.get(1, "/first")
        assert upstream.got_first.wait(TIMEOUT)
        conv.get(3, "/second")
        # A PING after it: its ACK says mtlsd has read /second and queued it upstream.
        conv.client.sock.sendall(frame(PING, 0, 0, b"queued!!"))
        assert conv.read_until(lambda c: b"queued!!" in c.ping_acks, TIMEOUT)
        upstream.release.set()
        assert conv.read_until(lambda c: c.over(1) and c.over(3), TIMEOUT), conv.describe(3)
        assert (conv.status(1), conv.bodies[1]) == (200, b"first"), conv.describe(1)
        assert_refused_not_answered(conv, 3, "/second")
    finally:
        upstream.release.set()
        conv.client.sock.close()
    assert upstream.paths == ["/first"], upstream.paths


# --- Expect: 100-continue from an HTTP/2 client -------------------------------------------

class H2cRecorder:
    """An h2c upstream (hyper-h2) that records each request's fields and body and answers
    200 with the body's length once the request ended. It sends no 100 of its own."""

    def __init__(self):
        self.requests: list[dict] = []

    def __call__(self, conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        seen: dict[int, dict] = {}
        while True:
            data = conn.recv()
            if not data:
                return
            for ev in h.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    seen[ev.stream_id] = {"headers": list(ev.headers), "body": b""}
                    self.requests.append(seen[ev.stream_id])
                elif isinstance(ev, h2.events.DataReceived):
                    seen[ev.stream_id]["body"] += ev.data
                    h.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    body = str(len(seen[ev.stream_id]["body"])).encode()
                    h.send_headers(ev.stream_id, [(":status", "200")])
                    h.send_data(ev.stream_id, body, end_stream=True)
            conn.sendall(h.data_to_send())


@pytest.mark.parametrize("upstream_protocol", ["http/1.1", "h2c"])
def test_expect_100_continue_from_an_http2_client_is_answered_by_mtlsd(serve, pki,
                                                                       upstream_protocol):
    """POST with `expect: 100-continue` and `content-length: 5`, no body yet: the client gets
    `:status 100` (waited for, before it sends the body), then sends "hello" and gets the
    final 200. The upstream got the body and no `expect` field."""
    if upstream_protocol == "h2c":
        h2c = H2cRecorder()
        daemon, _ = serve(h2c, http=H2C)
    else:
        rec = HttpRecorder()
        daemon, _ = serve(rec.handler(), http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False,
                             extra=(("content-length", "5"), ("expect", "100-continue")))
        try:
            interim = client.wait_for(
                lambda ev: isinstance(ev, (h2.events.InformationalResponseReceived,
                                           h2.events.ResponseReceived, h2.events.StreamReset))
                and ev.stream_id == sid, MAYBE)
        except AssertionError as e:
            raise AssertionError(f"no 100 (Continue) from mtlsd within {MAYBE}s of a request "
                                 f"that expects one: {e}") from None
        assert isinstance(interim, h2.events.InformationalResponseReceived), interim
        assert dict(interim.headers)[":status"] == "100", interim.headers
        client.conn.send_data(sid, b"hello", end_stream=True)
        client.flush()
        status, body = client.response(sid, TIMEOUT)
    finally:
        client.close()
    assert status == 200, (status, body)
    if upstream_protocol == "h2c":
        (req,) = h2c.requests
        names = [name for name, _ in req["headers"]]
        assert "expect" not in names, req["headers"]
        assert req["body"] == b"hello" and body == b"5"
    else:
        (req,) = rec.requests
        assert req.get("expect") is None, req.headers
        assert req.body == b"hello"
