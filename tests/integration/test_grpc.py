"""gRPC through mtlsd's `http:` mode (HTTP/2 downstream by ALPN, h2c upstream): a real grpcio
client with a client certificate, a real grpcio service behind mtlsd (grpc_probe.py).

Every behaviour test also runs on the "direct" route — the same client straight to the service's
own mTLS port — so a failure that happens only through mtlsd is mtlsd's. Through mtlsd each runs
with `upstream_protocol: h2c` and with `same` (h2c for an h2 client).

What the service sees of its caller (X-Forwarded-Client-Cert, X-Forwarded-For,
X-Forwarded-Proto), refused clients, and the per-request access line and metric are checked
through mtlsd only."""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from typing import Optional

import grpc
import pytest

from grpc_probe import ProbeServer, pattern, probe_stub, sha256, stubs, tls_channel
from mtlsd_harness import Mtlsd
from test_http_mode import CLIENT_ID, FORGED, client_element, sha256_hex

pb2, _ = stubs()
RPC_TIMEOUT = 10.0          # every call carries a deadline: a stalled stream fails, never hangs
LARGE = 4 * 1024 * 1024     # each way; above gRPC's 4 MiB default receive limit with framing
# What mtlsd calls an HTTP/2 request in access lines and in the `protocol` label.
H2 = "HTTP/2"


@dataclass
class Route:
    name: str                 # "direct", or the upstream_protocol mtlsd runs with
    port: int
    probe: ProbeServer
    daemon: Optional[Mtlsd]


@pytest.fixture
def probe(pki):
    server = ProbeServer(pki)
    yield server
    server.stop()


@pytest.fixture
def via_mtlsd(serve, probe):
    """via_mtlsd(upstream_protocol="h2c", http={...}, **listener_overrides) -> Mtlsd in front of
    the probe's h2c port. `h2c` serves HTTP/2 clients only (protocols: [h2]); `same` keeps the
    default protocols, [h2, http/1.1]."""
    def start(upstream_protocol: str = "h2c", http: dict | None = None, **overrides) -> Mtlsd:
        protocols = {"protocols": ["h2"]} if upstream_protocol == "h2c" else {}
        daemon, _ = serve(upstream=probe.address,
                          http={"upstream_protocol": upstream_protocol, **protocols,
                                **(http or {})},
                          **overrides)
        return daemon
    return start


@pytest.fixture(params=["direct", "h2c", "same"])
def route(request, probe, via_mtlsd) -> Route:
    if request.param == "direct":
        return Route("direct", probe.tls_port, probe, None)
    daemon = via_mtlsd(request.param)
    return Route(request.param, daemon.addr()[1], probe, daemon)


@pytest.fixture(params=["h2c", "same"])
def proxied(request, probe, via_mtlsd) -> Route:
    daemon = via_mtlsd(request.param)
    return Route(request.param, daemon.addr()[1], probe, daemon)


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args, **kwargs)
    return caught.value


# --- the four kinds of call ---------------------------------------------------------------------

def test_unary_with_initial_and_trailing_metadata(route, pki):
    with tls_channel(pki, route.port) as channel:
        reply, call = probe_stub(channel).Unary.with_call(pb2.Msg(text="ping", seq=7),
                                                          timeout=RPC_TIMEOUT)
    assert (reply.text, reply.seq, reply.count) == ("ping", 7, 0)
    assert call.code() == grpc.StatusCode.OK
    assert ("x-probe-initial", "hello") in call.initial_metadata()
    trailing = call.trailing_metadata()
    assert ("x-probe-trailer", "bye") in trailing
    assert ("x-probe-trailer-bin", b"\x00\xff\x00") in trailing
    (seen,) = route.probe.wait_calls(1)
    assert seen.method == "Unary"
    assert seen.ended.wait(RPC_TIMEOUT) and seen.outcome == "completed"


def test_server_streaming(route, pki):
    with tls_channel(pki, route.port) as channel:
        replies = list(probe_stub(channel).Countdown(pb2.Msg(text="n", count=200),
                                                     timeout=RPC_TIMEOUT))
    assert [(r.seq, r.text) for r in replies] == [(i, f"n-{i}") for i in range(200)]


def test_bidirectional_streaming_interleaves(route, pki):
    """Request i+1 is sent only after reply i came back, and the server answers each request
    when it arrives: a proxy that held either direction until the other side finished (or
    until END_STREAM) stalls this call until its deadline."""
    requests: queue.Queue = queue.Queue()

    def outgoing():
        while (msg := requests.get()) is not None:
            yield msg

    with tls_channel(pki, route.port) as channel:
        replies = probe_stub(channel).Chat(outgoing(), timeout=RPC_TIMEOUT)
        for seq in range(20):
            requests.put(pb2.Msg(text=f"m{seq}", seq=seq))
            reply = next(replies)
            # the server had exactly seq+1 requests when it answered: no batching on the way
            assert (reply.seq, reply.text, reply.count) == (seq, f"M{seq}", seq + 1)
        requests.put(None)  # half-close: the server's request loop ends, it says END
        assert [(r.seq, r.text, r.count) for r in replies] == [(-1, "END", 20)]
        assert replies.code() == grpc.StatusCode.OK
    (seen,) = route.probe.wait_calls(1)
    assert seen.received == list(range(20))
    assert seen.ended.wait(RPC_TIMEOUT) and seen.outcome == "completed"


def test_large_messages_both_ways(route, pki):
    """4 MiB up and 4 MiB down per call, two calls at once on one connection: HTTP/2 flow
    control has to open the windows on both legs, per stream and per connection."""
    uploads = [os.urandom(LARGE) for _ in range(2)]
    with tls_channel(pki, route.port) as channel:
        stub = probe_stub(channel)
        pending = [stub.Unary.future(pb2.Msg(blob=blob, count=LARGE, seq=i), timeout=30)
                   for i, blob in enumerate(uploads)]
        replies = [f.result() for f in pending]
    expected_down = sha256(pattern(LARGE))
    for i, reply in enumerate(replies):
        assert reply.seq == i
        assert (reply.count, reply.digest) == (LARGE, sha256(uploads[i]))
        assert len(reply.blob) == LARGE and sha256(reply.blob) == expected_down


# --- ending a call early ----------------------------------------------------------------------

def test_deadline_exceeded_reaches_both_ends(route, pki):
    with tls_channel(pki, route.port) as channel:
        stub = probe_stub(channel)
        stub.Unary(pb2.Msg(), timeout=RPC_TIMEOUT)  # connected: the deadline below is all RPC
        # 3 s: the call reaches the server with time left even through a slow (sanitized) proxy
        error = rpc_error(stub.Hang, pb2.Msg(), timeout=3.0)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _, hang = route.probe.wait_calls(2)
        # grpc-timeout crossed the proxy: the server knew the deadline (no more than the 3 s)
        assert hang.time_remaining is not None and 0 < hang.time_remaining < 3.5, hang
        assert hang.ended.wait(RPC_TIMEOUT), "the server never saw the call end"
        assert hang.outcome == "cancelled"


def test_client_cancel_of_a_unary_call_reaches_the_server(route, pki):
    """No deadline on the call: only the client's RST_STREAM, relayed, ends it at the server."""
    with tls_channel(pki, route.port) as channel:
        future = probe_stub(channel).Hang.future(pb2.Msg())
        (hang,) = route.probe.wait_calls(1)
        assert hang.entered.wait(RPC_TIMEOUT) and hang.time_remaining is None
        assert future.cancel()
        assert hang.ended.wait(RPC_TIMEOUT), "the cancellation never reached the server"
        assert hang.outcome == "cancelled"


def test_client_cancel_mid_stream_reaches_the_server(route, pki):
    requests: queue.Queue = queue.Queue()

    def outgoing():
        while (msg := requests.get()) is not None:
            yield msg

    with tls_channel(pki, route.port) as channel:
        replies = probe_stub(channel).Chat(outgoing())  # no deadline: only the cancel ends it
        for seq in range(3):
            requests.put(pb2.Msg(text="x", seq=seq))
            assert next(replies).seq == seq
        assert replies.cancel()
        (chat,) = route.probe.wait_calls(1)
        assert chat.ended.wait(RPC_TIMEOUT), "the cancellation never reached the server"
        requests.put(None)
    assert chat.outcome == "cancelled" and chat.received == [0, 1, 2]
    assert replies.code() == grpc.StatusCode.CANCELLED


# gRPC percent-encodes only bytes outside 0x20-0x7e in grpc-message and sends metadata values as
# given: whitespace at either end, or an empty value, is ordinary gRPC. RFC 9113 8.2.1 calls
# such a field value malformed, and nghttp2 enforces that unless told not to (curl and Apache's
# mod_proxy_http2 turn the check off); a proxy that enforces it turns these calls into errors.
STATUS_CASES = [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota; 100% used"),
    (grpc.StatusCode.PERMISSION_DENIED, " padded "),
    (grpc.StatusCode.NOT_FOUND, ""),
]


@pytest.mark.parametrize("code,text", STATUS_CASES, ids=["plain", "padded", "empty"])
def test_status_details_and_trailing_metadata(route, pki, code, text):
    """A gRPC error travels in the trailers (grpc-status, grpc-message) of an HTTP 200."""
    with tls_channel(pki, route.port) as channel:
        error = rpc_error(probe_stub(channel).Fail, pb2.Msg(text=text, count=code.value[0]),
                          timeout=RPC_TIMEOUT)
    assert error.code() == code
    assert error.details() == f"probe failed: {text}"
    trailing = error.trailing_metadata()
    assert ("x-probe-reason", text) in trailing
    assert ("x-probe-reason-bin", b"\x01\x02\x03") in trailing


# --- who called: what the service sees of its caller (through mtlsd only) -------------------

def joined(call, key: str) -> str:
    """A header's values as one field line (RFC 9110 5.3: repeated lines join with ", ")."""
    return ", ".join(call.values(key))


def test_service_sees_the_callers_identity(proxied, pki):
    """XFCC in Envoy's format (the same element the HTTP/1.1 tests expect), X-Forwarded-For
    appended to, X-Forwarded-Proto set; the client's own XFCC is not trusted."""
    forged = (("x-forwarded-client-cert", FORGED), ("x-forwarded-for", "203.0.113.7"),
              ("x-forwarded-proto", "http"))
    with tls_channel(pki, proxied.port) as channel:
        stub = probe_stub(channel)
        stub.Unary(pb2.Msg(), timeout=RPC_TIMEOUT)
        stub.Unary(pb2.Msg(), timeout=RPC_TIMEOUT, metadata=forged)
    with tls_channel(pki, proxied.port, cert="client2") as channel:
        probe_stub(channel).Unary(pb2.Msg(), timeout=RPC_TIMEOUT)
    plain, with_forged, other = proxied.probe.wait_calls(3)

    for call in (plain, with_forged):
        assert call.values("x-forwarded-client-cert") == [client_element(pki)], call.metadata
        assert call.values("x-forwarded-proto") == ["https"], call.metadata
    assert joined(plain, "x-forwarded-for") == "127.0.0.1", plain.metadata
    assert joined(with_forged, "x-forwarded-for") == "203.0.113.7, 127.0.0.1", with_forged.metadata
    assert not any("evil" in str(v) for _, v in with_forged.metadata), with_forged.metadata

    assert other.values("x-forwarded-client-cert") == [
        f"Hash={sha256_hex(pki, 'client2.crt')};"
        f'Subject="CN=client2,OU=other,O=mtlsd Test";'
        f"URI=spiffe://example.org/ns/other/sa/client2;DNS=client2.other.org"], other.metadata
    assert CLIENT_ID not in str(other.metadata)


def test_forwarded_for_and_proto_off(probe, via_mtlsd, pki):
    """`off`: mtlsd adds neither header (XFCC stays on: it has its own switch)."""
    daemon = via_mtlsd("h2c", http={"x_forwarded_for": "off", "x_forwarded_proto": "off"})
    with tls_channel(pki, daemon.addr()[1]) as channel:
        probe_stub(channel).Unary(pb2.Msg(), timeout=RPC_TIMEOUT)
    (call,) = probe.wait_calls(1)
    assert call.values("x-forwarded-for") == [] and call.values("x-forwarded-proto") == []
    assert call.values("x-forwarded-client-cert") == [client_element(pki)]


REFUSED = {  # cert -> the access line's reason
    "client-other": "unknown_ca",        # issued by a CA the listener does not trust
    "client2": "not_authorized",         # trusted CA, identity not allowed
    None: "no_client_cert",
}


@pytest.mark.parametrize("cert", list(REFUSED), ids=lambda c: c or "none")
def test_refused_client_never_reaches_the_service(probe, via_mtlsd, pki, cert):
    daemon = via_mtlsd("h2c", client_auth={"allow": {"spiffe_ids": [CLIENT_ID]}})
    port = daemon.addr()[1]
    with tls_channel(pki, port, cert=cert) as channel:
        error = rpc_error(probe_stub(channel).Unary, pb2.Msg(text="refused"), timeout=RPC_TIMEOUT)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    refusal = daemon.wait_for_access(result="rejected")
    assert refusal["reason"] == REFUSED[cert], refusal
    # The service is reachable and counts calls: the admitted call is the only one it saw.
    with tls_channel(pki, port) as channel:
        probe_stub(channel).Unary(pb2.Msg(text="admitted"), timeout=RPC_TIMEOUT)
    (only,) = probe.wait_calls(1)
    assert len(probe.calls) == 1 and only.method == "Unary"


# --- one access line and one count per RPC ------------------------------------------------------

def request_lines(daemon: Mtlsd, n: int, timeout: float = 5.0) -> list[dict]:
    """The per-request access lines ("msg":"request"), once n are written (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in daemon.logs() if line.get("msg") == "request"]
        if len(lines) >= n or time.monotonic() >= deadline:
            return lines
        time.sleep(0.01)


def wait_delta(daemon: Mtlsd, before, names: set[str], expected: dict, timeout: float = 5.0):
    """The counters' change since `before` once it equals `expected` (or the last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        delta = daemon.scrape().delta(before, names)
        if delta == expected or time.monotonic() >= deadline:
            return delta
        time.sleep(0.01)


def test_one_access_line_and_one_count_per_rpc(proxied, pki):
    daemon = proxied.daemon
    before = daemon.scrape()
    calls = {  # path -> the one request message
        "/mtlsd.probe.Probe/Unary": pb2.Msg(blob=b"x" * 1000),
        "/mtlsd.probe.Probe/Countdown": pb2.Msg(count=3),
        "/mtlsd.probe.Probe/Fail": pb2.Msg(text="gone", count=grpc.StatusCode.NOT_FOUND.value[0]),
    }
    with tls_channel(pki, proxied.port) as channel:
        stub = probe_stub(channel)
        stub.Unary(calls["/mtlsd.probe.Probe/Unary"], timeout=RPC_TIMEOUT)
        list(stub.Countdown(calls["/mtlsd.probe.Probe/Countdown"], timeout=RPC_TIMEOUT))
        rpc_error(stub.Fail, calls["/mtlsd.probe.Probe/Fail"], timeout=RPC_TIMEOUT)
        stub.Unary(calls["/mtlsd.probe.Probe/Unary"], timeout=RPC_TIMEOUT)
    lines = request_lines(daemon, 4)
    assert len(lines) == 4, lines
    assert sorted(line["path"] for line in lines) == sorted(
        ["/mtlsd.probe.Probe/Unary", "/mtlsd.probe.Probe/Countdown", "/mtlsd.probe.Probe/Fail",
         "/mtlsd.probe.Probe/Unary"]), lines
    for line in lines:
        assert line["method"] == "POST" and line["protocol"] == H2, line
        assert line["status"] == 200, line      # the gRPC status rides in the trailers...
        expected_grpc = grpc.StatusCode.NOT_FOUND.value[0] if line["path"].endswith("/Fail") else 0
        assert line["grpc_status"] == expected_grpc, line   # ...which the line reads
        assert line["authority"] == f"127.0.0.1:{proxied.port}", line
        assert line["listener"] == "inbound" and line["identity"] == CLIENT_ID, line
        assert line["alpn"] == "h2", line
        # body bytes: one length-prefixed message (5-byte gRPC frame header + protobuf)
        assert line["req_bytes"] == 5 + calls[line["path"]].ByteSize(), line
        if line["path"].endswith("/Fail"):
            assert line["resp_bytes"] == 0, line   # Trailers-Only: no DATA at all
        else:
            assert line["resp_bytes"] > 5, line
    assert len({line["conn_id"] for line in lines}) == 1, "one channel, one connection"
    stream_ids = sorted(line["stream_id"] for line in lines)
    assert len(set(stream_ids)) == 4 and all(s % 2 == 1 for s in stream_ids), stream_ids

    requests = ("mtlsd_http_requests_total",
                (("code_class", "2xx"), ("listener", "inbound"), ("protocol", H2)))
    durations = ("mtlsd_http_request_duration_seconds_count", (("listener", "inbound"),))
    names = {requests[0], durations[0]}
    expected = {requests: 4.0, durations: 4.0}
    assert wait_delta(daemon, before, names, expected) == expected
    assert daemon.stop() == 0  # every line is out: still exactly one per RPC
    assert len([line for line in daemon.logs() if line.get("msg") == "request"]) == 4
