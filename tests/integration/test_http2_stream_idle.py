"""http.stream_idle_timeout: an HTTP/2 stream with no frames either way for that long.

A stream whose response has not begun is answered by a HEADERS frame alone (flow control cannot
hold it back), as nginx's and Envoy's timeouts answer: `504`
while the upstream holds back its answer (HTTP/1.1 and h2c upstreams alike, the upstream's
stream reset with CANCEL), `408` while the client holds back the rest of its request (then
RST_STREAM(NO_ERROR): the rest is not wanted), Trailers-Only with grpc-status 14 to a gRPC call.
A stream whose response began can only be reset (CANCEL). Before, every such stream was reset,
and a gRPC caller saw CANCELLED with no reason. A stream that waited for the upstream and never
reached it is refused (REFUSED_STREAM: the client may send it again); it got a 504, which a
client may not retry (a review). The connection goes on either way."""

from __future__ import annotations

import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from h2_client import H2Client, status_of
from helpers import wait_request_line
from http_upstream import response
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 20
IDLE = {"stream_idle_timeout": "1s"}
DETAIL = "stream idle timeout (1s)"


def stream_events(client: H2Client, sid: int) -> list:
    return [e for e in client.events if getattr(e, "stream_id", None) == sid]


def never_answering(release: threading.Event):
    """An HTTP/1.1 app that holds /never until `release`, and answers anything else at once."""
    def app(req):
        if req.target == "/never":
            release.wait(TIMEOUT)
        return response(200, b"fine")
    return app


def test_a_stream_whose_upstream_does_not_answer_gets_504(http_serve, pki):
    release = threading.Event()
    daemon, _, recorder = http_serve(never_answering(release), http=IDLE)
    client = H2Client(daemon, pki)
    try:
        start = time.monotonic()
        sid = client.request("/never")
        status, body = client.response(sid, TIMEOUT)
        waited = time.monotonic() - start
        # The connection goes on: the next request is served.
        assert client.response(client.request("/next"), TIMEOUT) == (200, b"fine")
    finally:
        release.set()
        client.close()
    assert (status, body) == (504, b"")
    assert 0.9 <= waited < 5, waited
    assert [r.target for r in recorder.requests][:1] == ["/never"]
    line = wait_request_line(daemon, path="/never")
    assert (line["status"], line["detail"]) == (504, DETAIL), line


def reads_until_closed(conn) -> None:
    """An upstream that takes what comes and never answers."""
    while conn.recv():
        pass


def test_the_answer_ends_the_stream_behind_a_zero_window(http_serve, pki):
    """A client that lets no DATA through (SETTINGS_INITIAL_WINDOW_SIZE 0) still gets the 504 and
    the end of its stream; its connection then meets timeouts.idle. A body would have waited
    behind the window for good, and the open stream kept the connection from ever being idle."""
    release = threading.Event()
    daemon, _, _ = http_serve(never_answering(release), http=IDLE, timeouts={"idle": "2s"})
    client = H2Client(daemon, pki, send_preface=False)
    client.conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.conn.initiate_connection()
    client.flush()
    try:
        sid = client.request("/never")
        client.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                        TIMEOUT)
        status = status_of(stream_events(client, sid))
        client.wait_for(lambda e: isinstance(e, h2.events.ConnectionTerminated), TIMEOUT)
    finally:
        release.set()
        client.close()
    assert status == 504
    line = daemon.wait_for_log(lambda l: l.get("msg") == "access")
    assert line["termination"] == "idle_timeout", line


def test_a_stream_whose_client_holds_back_its_body_gets_408_then_no_error(serve, pki):
    daemon, _ = serve(reads_until_closed, http=IDLE)
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/upload", method="POST", end_stream=False)
        client.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                        TIMEOUT)
        reset = client.wait_for(lambda e: isinstance(e, h2.events.StreamReset)
                                and e.stream_id == sid, TIMEOUT)
        events = stream_events(client, sid)
    finally:
        client.close()
    assert status_of(events) == 408, events
    assert bytes(client.bodies[sid]) == b""
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR, reset
    line = wait_request_line(daemon, path="/upload")
    assert (line["status"], line["detail"]) == (408, DETAIL), line


def test_a_stream_whose_response_began_is_reset(http_serve, pki):
    # Ten bytes announced, two sent, then nothing: an answer cannot be replaced, only cut.
    daemon, _, _ = http_serve(lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
                              http=IDLE)
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/stalls")
        reset = client.wait_for(lambda e: isinstance(e, h2.events.StreamReset)
                                and e.stream_id == sid, TIMEOUT)
        events = stream_events(client, sid)
    finally:
        client.close()
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL, reset
    assert status_of(events) == 200 and bytes(client.bodies[sid]) == b"ab", events
    line = wait_request_line(daemon, path="/stalls")
    assert (line["status"], line["detail"]) == (200, DETAIL), line


def test_a_grpc_call_whose_upstream_does_not_answer_gets_trailers_only(http_serve, pki):
    release = threading.Event()
    daemon, _, _ = http_serve(never_answering(release), http=IDLE)
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/never", method="POST", extra=(
            ("content-type", "application/grpc"), ("te", "trailers")))
        client.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid,
                        TIMEOUT)
        heads = [dict(e.headers) for e in stream_events(client, sid)
                 if isinstance(e, h2.events.ResponseReceived)]
    finally:
        release.set()
        client.close()
    assert heads == [{":status": "200", "content-type": "application/grpc", "grpc-status": "14",
                      "grpc-message": DETAIL}], heads
    line = wait_request_line(daemon, path="/never")
    assert (line["status"], line["grpc_status"], line["detail"]) == (504, 14, DETAIL), line


def h2c_upstream_holding_never(resets: list, reset_seen: threading.Event):
    """An h2c upstream that never answers /never (and records the resets it gets for it)."""
    def upstream(conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        try:
            while data := conn.recv():
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.StreamReset):
                        resets.append(ev.error_code)
                        reset_seen.set()
                    elif (isinstance(ev, h2.events.RequestReceived)
                          and dict(ev.headers)[":path"] != "/never"):
                        h.send_headers(ev.stream_id, [(":status", "200")])
                        h.send_data(ev.stream_id, b"fine", end_stream=True)
                if out := h.data_to_send():
                    conn.sendall(out)
        except OSError:
            pass
    return upstream


def test_an_h2c_upstream_that_does_not_answer_gets_cancel_and_the_client_504(serve, pki):
    resets: list = []
    reset_seen = threading.Event()
    daemon, _ = serve(h2c_upstream_holding_never(resets, reset_seen),
                      http={"upstream_protocol": "h2c", "protocols": ["h2"], **IDLE})
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/never")
        assert client.response(sid, TIMEOUT) == (504, b"")
        assert client.response(client.request("/next"), TIMEOUT) == (200, b"fine")
    finally:
        client.close()
    assert reset_seen.wait(TIMEOUT)
    assert resets == [h2.errors.ErrorCodes.CANCEL], resets
    line = wait_request_line(daemon, path="/never")
    assert (line["status"], line["detail"]) == (504, DETAIL), line


def holds_every_request(heads: list):
    """An HTTP/1.1 upstream that records the request line of each connection (one exchange each:
    it never answers) and reads on until the connection closes."""
    def handle(conn) -> None:
        data = b""
        while b"\r\n" not in data and (chunk := conn.recv()):
            data += chunk
        heads.append(data.split(b"\r\n", 1)[0].decode())
        while conn.recv():
            pass
    return handle


def test_a_stream_that_never_reached_the_upstream_is_refused(serve, pki):
    """One upstream place (max_upstream_connections_per_client: 1), held by an upload the client
    keeps going (a byte of DATA each turn, so that it is never idle); a GET behind it waits for
    the place until its stream idle timeout: RST_STREAM(REFUSED_STREAM), and the upstream never
    saw it."""
    heads: list = []
    daemon, _ = serve(holds_every_request(heads),
                      http={**IDLE, "max_upstream_connections_per_client": 1})
    client = H2Client(daemon, pki)
    try:
        held = client.request("/held", method="POST", end_stream=False)
        queued = client.request("/queued")
        deadline = time.monotonic() + TIMEOUT
        while not any(isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded))
                      for e in stream_events(client, queued)):
            assert time.monotonic() < deadline and not client.closed, client.events
            client.conn.send_data(held, b"x")
            client.flush()
            client.pump(0.2)
        events = stream_events(client, queued)
        held_events = stream_events(client, held)
    finally:
        client.close()
    assert [type(e) for e in events] == [h2.events.StreamReset], events
    assert events[0].error_code == h2.errors.ErrorCodes.REFUSED_STREAM, events
    assert held_events == [], held_events
    assert heads == ["POST /held HTTP/1.1"], heads
    line = wait_request_line(daemon, path="/queued")
    assert (line["status"], line["detail"]) == (
        0, DETAIL + ": the request never reached the upstream, refused"), line
