"""mtlsd's own answers to gRPC calls: a refusal after the handshake (h2_refusal.cpp) and the
answers the HTTP/2 connection makes itself (h2_connection.cpp: a 502 when the upstream fails
before its response head, 400, 431...). A gRPC call, one whose content-type is
application/grpc, gets a Trailers-Only response, as from Envoy's local replies: `:status 200`,
`grpc-status` (what gRPC reads from the HTTP status mtlsd meant) and `grpc-message` (mtlsd's
reason). Before, a grpcio client saw only the HTTP status ("Received http2 header with status:
502"), mtlsd's reason lost. Any other request still gets the HTTP answer with a text body.

The request line of such an answer keeps the HTTP status the Trailers-Only 200 stands for, with
the grpc_status sent, and counts in that status's class: an upstream outage is 5xx for gRPC
callers as for HTTP ones (Envoy's access log has 200 there, and its 5xx count misses the outage)."""

from __future__ import annotations

import time

import grpc
import h2.errors
import h2.events
import pytest

from clients import fmt_addr
from grpc_probe import probe_stub, stubs, tls_channel
from h2_client import H2Client
from helpers import wait_request_line
from upstream import reply_after

pb2, _ = stubs()
DEADLINE = 5.0
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]  # 14
GRPC_CALL = (("content-type", "application/grpc"), ("te", "trailers"))


def call_fails(port: int, pki) -> grpc.RpcError:
    """One unary call on a fresh channel, which must fail: its error."""
    with tls_channel(pki, port) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            probe_stub(channel).Unary(pb2.Msg(text="x"), timeout=DEADLINE)
    return caught.value


def counted(daemon, code_class: str, expected: float) -> float:
    """mtlsd_http_requests_total{protocol="HTTP/2", code_class} once it is `expected` (it is
    counted just after the request line is written), or its value when the time is up."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = daemon.scrape().total("mtlsd_http_requests_total", listener="inbound",
                                      protocol="HTTP/2", code_class=code_class)
        if value == expected or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)


def trailers_only(client: H2Client, sid: int) -> dict:
    """The fields of stream `sid`'s one HEADERS frame, which must have ended it (no DATA)."""
    client.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
                    and ev.stream_id == sid)
    mine = [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]
    heads = [ev for ev in mine if isinstance(ev, h2.events.ResponseReceived)]
    assert len(heads) == 1 and heads[0].stream_ended is not None, mine
    assert not any(isinstance(ev, (h2.events.DataReceived, h2.events.StreamReset))
                   for ev in mine), mine
    return dict(heads[0].headers)


# --- refused after the handshake (h2_refusal.cpp) ----------------------------------------------

def test_a_grpc_call_whose_upstream_is_down_hears_upstream_unavailable(serve, refused_address,
                                                                       pki):
    """The session's upstream connect is refused: the call ends UNAVAILABLE with mtlsd's reason
    as its details; the request line has 502 (what the answer stands for) and grpc_status 14,
    counted as 5xx."""
    daemon, _ = serve(upstream=refused_address,
                      http={"upstream_protocol": "h2c", "protocols": ["h2"]})
    error = call_fails(daemon.addr()[1], pki)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert error.details() == "upstream unavailable", error.details()
    line = wait_request_line(daemon, path="/mtlsd.probe.Probe/Unary")
    assert (line["status"], line["grpc_status"], line["resp_bytes"]) == (502, UNAVAILABLE, 0), line
    assert line["detail"].startswith("upstream_unavailable: connect to "), line
    assert counted(daemon, "5xx", 1) == 1
    assert counted(daemon, "2xx", 0) == 0


def test_a_refused_connection_answers_grpc_and_other_requests_each_in_kind(serve,
                                                                           refused_address, pki):
    """Two requests in one flight to a refused connection: the gRPC one gets the Trailers-Only
    answer, the other the 502 with its text body, as before."""
    daemon, _ = serve(upstream=refused_address, http={})
    client = H2Client(daemon, pki)
    try:
        call = client.request("/svc/Method", method="POST", extra=GRPC_CALL, flush=False)
        plain = client.request("/plain", flush=False)
        client.flush()
        fields = trailers_only(client, call)
        assert client.response(plain) == (502, b"upstream unavailable\n")
        local = fmt_addr(client.sock.getsockname())
    finally:
        client.close()
    assert fields == {":status": "200", "content-type": "application/grpc",
                      "grpc-status": "14", "grpc-message": "upstream unavailable"}, fields
    [plain_head] = [ev for ev in client.events if isinstance(ev, h2.events.ResponseReceived)
                    and ev.stream_id == plain]
    assert dict(plain_head.headers)["content-type"] == "text/plain", plain_head
    daemon.wait_for_access(client=local, reason="upstream_unavailable")
    grpc_line = wait_request_line(daemon, client=local, path="/svc/Method")
    plain_line = wait_request_line(daemon, client=local, path="/plain")
    assert (grpc_line["status"], grpc_line["grpc_status"]) == (502, UNAVAILABLE), grpc_line
    assert (plain_line["status"], plain_line["grpc_status"]) == (502, None), plain_line


# --- answered by the HTTP/2 connection itself (h2_connection.cpp) ------------------------------

def test_a_grpc_call_whose_upstream_closes_before_its_head_hears_why(serve, pki):
    """An HTTP/1.1 upstream that reads the request and closes without a response: mtlsd answers
    itself (a 502 for an HTTP request). The gRPC call ends UNAVAILABLE with mtlsd's reason as its
    details; a plain HTTP/2 request on the same listener still gets `502 Bad Gateway`."""
    daemon, _ = serve(reply_after(b"\r\n\r\n", b""), http={"protocols": ["h2"]})
    error = call_fails(daemon.addr()[1], pki)
    why = "upstream: reading the response head: end of stream"
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert error.details() == why, error.details()
    line = wait_request_line(daemon, path="/mtlsd.probe.Probe/Unary")
    assert (line["status"], line["grpc_status"], line["resp_bytes"]) == (502, UNAVAILABLE, 0), line
    assert line["detail"] == why, line
    assert counted(daemon, "5xx", 1) == 1

    client = H2Client(daemon, pki)
    try:
        sid = client.request("/plain")
        assert client.response(sid) == (502, b"Bad Gateway\n")
    finally:
        client.close()
    plain = wait_request_line(daemon, path="/plain")
    assert (plain["status"], plain["grpc_status"], plain["detail"]) == (502, None, why), plain
    assert counted(daemon, "5xx", 2) == 2


def test_a_grpc_call_mtlsd_refuses_itself_is_answered_trailers_only(serve, pki):
    """A request mtlsd answers before any upstream (here a fragment in :path: 400) is a gRPC
    answer too: INTERNAL (gRPC's reading of 400), the reason as grpc-message; the upstream hears
    nothing."""
    daemon, up = serve(http={"protocols": ["h2"]})
    client = H2Client(daemon, pki)
    try:
        call = client.request("/svc/Method#x", method="POST", extra=GRPC_CALL)
        fields = trailers_only(client, call)
        plain = client.request("/plain#x")
        assert client.response(plain) == (400, b"400\n")
    finally:
        client.close()
    assert fields == {":status": "200", "content-type": "application/grpc",
                      "grpc-status": str(grpc.StatusCode.INTERNAL.value[0]),
                      "grpc-message": "a fragment in :path"}, fields
    line = wait_request_line(daemon, path="/svc/Method#x")
    assert (line["status"], line["grpc_status"]) == (400, grpc.StatusCode.INTERNAL.value[0]), line
    assert up.connection_count() <= 1  # the session's own connection, which carried nothing
