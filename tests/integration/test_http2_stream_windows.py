"""HTTP/2 flow control split between the connection and its streams, as nginx splits it: a DATA
chunk's bytes go back to the connection's window as soon as mtlsd buffered them in their stream,
to the stream's window only once the other side took them. A stream that cannot move then holds
its own window (64 KiB), never the connection's.

Before (a review's findings), both windows came back only when the other side took the bytes:
- 30 uploads of 1 MiB on one connection: the streams waiting for one of the 8 places towards an
  HTTP/1.1 upstream (or queued behind an h2c upstream's concurrency limit) each held 64 KiB of
  the client's 1 MiB connection window, 16 of them all of it; the running uploads could not
  send another byte, and everything waited for stream_idle_timeout (408s and 504s);
- downloads from an h2c upstream that the client leaves unread: 16 of them held mtlsd's 1 MiB
  window towards the upstream, and no other stream of the client's connection got its DATA.

The clients and the h2c upstreams are hyper-h2 (h2_client.py), sending only what the windows
allow."""

from __future__ import annotations

import json
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from h2_client import H2Client, status_of
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 30.0
UPLOADS = 30
BODY = memoryview(b"u" * (1 << 20))
# Short, so that a stall ends the test soon; long enough for the last queued upload's wait for a
# place (the uploads ahead of it move ~25 MiB through Python peers meanwhile).
IDLE = "5s"
H2C = {"upstream_protocol": "h2c", "protocols": ["h2"], "stream_idle_timeout": IDLE}


def ended(client: H2Client, sid: int) -> bool:
    return any(isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
               and ev.stream_id == sid for ev in client.events)


def upload_in_parallel(client: H2Client) -> dict[int, tuple]:
    """UPLOADS POSTs of BODY opened at once, their DATA sent round-robin within the windows mtlsd
    grants, until every stream ended (answered or reset); each stream's (status, body)."""
    sids = [client.request("/up", method="POST", end_stream=False, flush=False,
                           extra=(("content-length", str(len(BODY))),)) for _ in range(UPLOADS)]
    client.flush()
    sent = dict.fromkeys(sids, 0)
    deadline = time.monotonic() + TIMEOUT
    while not all(ended(client, sid) for sid in sids):
        assert time.monotonic() < deadline and not client.closed, sent
        for sid in sids:
            if sent[sid] < len(BODY) and not ended(client, sid):
                sent[sid] += client.send_within_window(sid, BODY[sent[sid]:])
                if sent[sid] == len(BODY):
                    client.conn.end_stream(sid)
                    client.flush()
        client.pump(0.05)  # the WINDOW_UPDATEs, the answers
    return {sid: (status_of([ev for ev in client.events if getattr(ev, "stream_id", 0) == sid]),
                  bytes(client.bodies[sid])) for sid in sids}


def test_parallel_uploads_past_the_http11_upstream_places_all_go_through(http_serve, pki):
    """8 of the 30 go up at once (max_upstream_connections_per_client), the others wait for a
    place with their stream windows full."""
    daemon, _, recorder = http_serve(http={"protocols": ["h2"], "stream_idle_timeout": IDLE})
    client = H2Client(daemon, pki)
    try:
        answers = upload_in_parallel(client)
    finally:
        client.close()
    statuses = [status for status, _ in answers.values()]
    assert statuses == [200] * UPLOADS, statuses
    assert {json.loads(body)["body_len"] for _, body in answers.values()} == {len(BODY)}
    assert len(recorder.requests) == UPLOADS


class H2cSink:
    """An h2c upstream taking `streams` streams at a time: it reads each request's body whole
    (acknowledging it as it comes) and answers 200 with the number of bytes it got."""

    def __init__(self, streams: int) -> None:
        self.streams = streams

    def __call__(self, conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.streams})
        h.initiate_connection()
        h.increment_flow_control_window(1 << 24)  # the connection's: its streams' set the pace
        conn.sendall(h.data_to_send())
        got: dict[int, int] = {}
        try:
            while data := conn.recv(65536):
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        got[ev.stream_id] = got.get(ev.stream_id, 0) + len(ev.data)
                        h.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        h.send_headers(ev.stream_id, [(":status", "200")])
                        h.send_data(ev.stream_id, str(got.pop(ev.stream_id, 0)).encode(),
                                    end_stream=True)
                conn.sendall(h.data_to_send())
        except OSError:
            pass


def test_parallel_uploads_past_an_h2c_upstreams_stream_limit_all_go_through(serve, pki):
    """4 of the 30 go up at once (the upstream's SETTINGS_MAX_CONCURRENT_STREAMS), the others
    wait inside mtlsd's session towards it with their stream windows full."""
    daemon, _ = serve(H2cSink(streams=4), http=H2C)
    client = H2Client(daemon, pki)
    try:
        # First a GET, which opens the upstream connection: mtlsd knows its limit from then on
        # (streams sent before its SETTINGS came may pass it: hyper-h2 then drops the connection).
        assert client.response(client.request("/warm-up"), TIMEOUT) == (200, b"0")
        answers = upload_in_parallel(client)
    finally:
        client.close()
    assert list(answers.values()) == [(200, str(len(BODY)).encode())] * UPLOADS, answers


DOWNLOADS = 20
BIG = b"d" * (256 * 1024)   # each: more than the client's window and mtlsd's stream window
SMALL = b"small file\n"


class H2cFiles:
    """An h2c upstream serving /big (BIG) and /small (SMALL), sending DATA as far as the windows
    mtlsd grants. `stalled` is set once DOWNLOADS streams of /big were asked for and none can
    move: mtlsd holds all it will take of them."""

    def __init__(self) -> None:
        self.stalled = threading.Event()

    def __call__(self, conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        left: dict[int, bytes] = {}   # what each stream has still to send
        try:
            while data := conn.recv(65536):
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        h.send_headers(ev.stream_id, [(":status", "200")])
                        left[ev.stream_id] = BIG if dict(ev.headers)[":path"] == "/big" else SMALL
                self.send_what_fits(h, left)
                conn.sendall(h.data_to_send())
                if len(left) >= DOWNLOADS and all(
                        h.local_flow_control_window(sid) == 0 for sid in left):
                    self.stalled.set()
        except OSError:
            pass

    @staticmethod
    def send_what_fits(h: h2.connection.H2Connection, left: dict[int, bytes]) -> None:
        for sid in list(left):
            while left[sid] and (n := min(h.local_flow_control_window(sid),
                                          h.max_outbound_frame_size, len(left[sid]))) > 0:
                h.send_data(sid, left[sid][:n])
                left[sid] = left[sid][n:]
            if not left[sid]:
                h.end_stream(sid)
                del left[sid]


def test_unread_h2c_downloads_do_not_hold_back_another_stream(serve, pki):
    """The client opens its connection window wide but never its streams': 20 downloads stop at
    64 KiB each, mtlsd holds the next 64 KiB of each. /small, asked for then, still gets its
    body at once."""
    upstream = H2cFiles()
    daemon, _ = serve(upstream, http={**H2C, "stream_idle_timeout": "5m"})
    client = H2Client(daemon, pki, ack_data=False)
    try:
        client.conn.increment_flow_control_window(1 << 30)
        for _ in range(DOWNLOADS):
            client.request("/big", flush=False)
        client.flush()
        assert upstream.stalled.wait(TIMEOUT), "the upstream could still send"
        small = client.request("/small")
        deadline = time.monotonic() + 10
        while not ended(client, small) and time.monotonic() < deadline and not client.closed:
            client.pump(deadline - time.monotonic())
        events = [ev for ev in client.events if getattr(ev, "stream_id", 0) == small]
        assert ended(client, small), f"/small, 10 s later: {events}"
        assert client.response(small, 0) == (200, SMALL)
    finally:
        client.close()
