"""HTTP/2 in `http:` mode: clients that negotiate h2 by ALPN (curl --http2, nghttp)
are served through nghttp2, towards an HTTP/1.1 upstream (our strict parser,
http_upstream.py) or an h2c one (a grpcio server: trailers, streaming both
ways). Every request carries X-Forwarded-Client-Cert, X-Forwarded-For and
X-Forwarded-Proto, gets its own "request" access line and is counted in
mtlsd_http_requests_total."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent import futures

import pytest

from clients import client_context
from h2_frames import DATA, END_STREAM, GOAWAY, HEADERS, connect_h2, goaway_fields
from http_upstream import response
from mtlsd_harness import free_port
from test_http_mode import CLIENT_ID, FORGED, client_element, http_serve, https  # noqa: F401

TIMEOUT = 20

pytestmark = pytest.mark.skipif(not shutil.which("nghttp"), reason="nghttp2-client not installed")


def seen_headers(req) -> bytes:
    """An upstream app answering with the forwarding headers it received."""
    return response(200, json.dumps({
        "method": req.method, "target": req.target, "host": req.get("host"),
        "xfcc": req.xfcc, "xff": req.get_all("x-forwarded-for"),
        "xfp": req.get_all("x-forwarded-proto"), "te": req.get("te"),
        "connection": req.get("connection"), "body_len": len(req.body),
        "chunked": req.chunked,
    }).encode())


def curl(daemon, pki, path="/", *args, cert="client", http="--http2"):
    host, port = daemon.addr()
    cmd = ["curl", "-sS", http, "--max-time", str(TIMEOUT), "--cacert", pki.path("ca.crt"),
           "--resolve", f"localhost:{port}:{host}",
           "-w", "\n%{http_version} %{http_code}", f"https://localhost:{port}{path}", *args]
    if cert:
        cmd[1:1] = ["--cert", pki.path(f"{cert}.crt"), "--key", pki.path(f"{cert}.key")]
    return subprocess.run(cmd, capture_output=True, encoding="latin-1", timeout=TIMEOUT + 5)


def body_and_status(out: str):
    body, _, tail = out.rpartition("\n")
    version, code = tail.split()
    return body, version, int(code)


def request_lines(daemon, **match):
    return [line for line in daemon.logs() if line.get("msg") == "request"
            and all(line.get(k) == v for k, v in match.items())]


def wait_request_lines(daemon, count, **match):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        lines = request_lines(daemon, **match)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{count} request lines wanted: {request_lines(daemon)}\n"
                         f"{daemon.output_tail()}")


# --- HTTP/2 client, HTTP/1.1 upstream --------------------------------------------

def test_curl_h2_forwarding_headers_reach_http1_upstream(http_serve, pki):
    daemon, _, recorder = http_serve(seen_headers)
    r = curl(daemon, pki, "/hello?x=1", "-H", f"X-Forwarded-Client-Cert: {FORGED}",
             "-H", "X-Forwarded-For: 198.51.100.7", "-H", "X-Forwarded-Proto: http")
    assert r.returncode == 0, r.stderr
    body, version, code = body_and_status(r.stdout)
    assert (version, code) == ("2", 200)
    seen = json.loads(body)
    assert seen["method"] == "GET" and seen["target"] == "/hello?x=1"
    assert seen["host"] == f"localhost:{daemon.addr()[1]}"
    assert seen["xfcc"] == [client_element(pki)]          # the forged element is gone
    assert seen["xff"] == ["198.51.100.7, 127.0.0.1"]    # appended
    assert seen["xfp"] == ["https"]                       # replaced
    assert seen["connection"] in (None, "keep-alive")
    line = wait_request_lines(daemon, 1)[0]
    assert line["method"] == "GET" and line["path"] == "/hello?x=1"
    assert line["protocol"] == "HTTP/2" and line["status"] == 200
    assert line["stream_id"] == 1 and line["identity"] == CLIENT_ID
    assert line["alpn"] == "h2" and line["listener"] == "inbound"
    assert line["resp_bytes"] == len(body)
    assert line["grpc_status"] is None       # not an RPC (HTTP/1.1 upstream)


def test_forwarding_headers_can_be_turned_off(http_serve, pki):
    daemon, _, _ = http_serve(seen_headers, http={"x_forwarded_for": "off",
                                                  "x_forwarded_proto": "off"})
    r = curl(daemon, pki, "/", "-H", "X-Forwarded-For: 198.51.100.7",
             "-H", "X-Forwarded-Proto: http")
    body, version, code = body_and_status(r.stdout)
    seen = json.loads(body)
    assert seen["xff"] == ["198.51.100.7"] and seen["xfp"] == ["http"]


def test_h2_upload_and_download_stream_through_http1(http_serve, pki, tmp_path):
    """A 3 MiB upload of unknown length goes upstream chunked; a 64 KiB chunked answer
    comes back whole: bodies flow through the bounded buffers both ways."""
    daemon, _, recorder = http_serve()
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * (3 * 4096))
    r = curl(daemon, pki, "/up", "-T", str(blob), "-H", "Transfer-Encoding: chunked")
    assert r.returncode == 0, r.stderr
    body, version, code = body_and_status(r.stdout)
    assert (version, code) == ("2", 200)
    seen = json.loads(body)
    assert seen["body_len"] == 3 * 1024 * 1024
    r = curl(daemon, pki, "/chunked")
    body, version, code = body_and_status(r.stdout)
    assert code == 200 and len(body) > 65536
    lines = wait_request_lines(daemon, 2)
    assert lines[0]["req_bytes"] == 3 * 1024 * 1024


def test_nghttp_concurrent_streams_each_get_a_line(http_serve, pki):
    daemon, _, recorder = http_serve()
    host, port = daemon.addr()
    r = subprocess.run(["nghttp", "-n", "-s", "--cert", pki.path("client.crt"),
                        "--key", pki.path("client.key"),
                        f"https://{host}:{port}/a", f"https://{host}:{port}/b",
                        f"https://{host}:{port}/c"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = wait_request_lines(daemon, 3)
    assert sorted(l["path"] for l in lines) == ["/a", "/b", "/c"]
    ids = {l["stream_id"] for l in lines}     # nghttp may open priority streams first
    assert len(ids) == 3 and all(i % 2 == 1 for i in ids)
    assert len({l["conn_id"] for l in lines}) == 1
    metrics = daemon.scrape()
    assert metrics.get("mtlsd_http_requests_total", listener="inbound", protocol="HTTP/2",
                       code_class="2xx") == 3
    assert metrics.get("mtlsd_http_request_duration_seconds_count", listener="inbound") == 3


def test_http11_keep_alive_gives_one_line_per_request(http_serve, pki):
    daemon, _, _ = http_serve()
    r = curl(daemon, pki, "/one", "--next", "--cert", pki.path("client.crt"), "--key",
             pki.path("client.key"), "--cacert", pki.path("ca.crt"),
             f"https://localhost:{daemon.addr()[1]}/two", http="--http1.1")
    assert r.returncode == 0, r.stderr
    lines = wait_request_lines(daemon, 2)
    assert [l["path"] for l in lines] == ["/one", "/two"]
    assert [l["stream_id"] for l in lines] == [1, 2]
    assert {l["protocol"] for l in lines} == {"HTTP/1.1"}
    assert len({l["conn_id"] for l in lines}) == 1
    assert daemon.scrape().get("mtlsd_http_requests_total", listener="inbound",
                               protocol="HTTP/1.1", code_class="2xx") == 2


def test_unverified_peer_never_reaches_upstream(http_serve, pki):
    daemon, _, recorder = http_serve()
    r = curl(daemon, pki, "/", cert=None)
    assert r.returncode != 0
    r = curl(daemon, pki, "/", cert="client-other")   # signed by an unrelated CA
    assert r.returncode != 0
    reasons = {daemon.wait_for_access(result="rejected")["reason"] for _ in range(2)}
    assert reasons == {"no_client_cert", "unknown_ca"}
    assert recorder.requests == []
    assert request_lines(daemon) == []


def test_upstream_down_gives_502(http_serve, pki):
    daemon, _, recorder = http_serve(handler=lambda conn: conn.shutdown_write())
    r = curl(daemon, pki, "/")
    body, version, code = body_and_status(r.stdout)
    assert code == 502
    line = wait_request_lines(daemon, 1)[0]
    assert line["status"] == 502 and "upstream" in line["detail"]


def test_goaway_when_drain_timeout_closes_the_connection(http_serve, pki):
    """A request still waiting for its upstream when the drain timeout ends the connection:
    the client hears GOAWAY before the close."""
    release = threading.Event()
    arrived = threading.Event()

    def slow(req):
        arrived.set()
        release.wait(TIMEOUT)
        return response(200, b"late")
    daemon, _, _ = http_serve(slow, top={"shutdown": {"drain_timeout": "500ms"}})
    host, port = daemon.addr()
    proc = subprocess.Popen(["nghttp", "-v", "--cert", pki.path("client.crt"),
                             "--key", pki.path("client.key"), f"https://{host}:{port}/slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert arrived.wait(TIMEOUT), "the request never reached the upstream"
        daemon.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert "recv GOAWAY frame" in out, out
    assert daemon.wait_exit() == 0


def held_upstream():
    """An upstream app that answers "late" once released; `arrived` is set per request."""
    release, arrived = threading.Event(), threading.Event()

    def slow(req):
        arrived.set()
        release.wait(TIMEOUT)
        return response(200, b"late")
    return slow, release, arrived


def test_drain_start_sends_goaway_and_lets_the_stream_in_flight_finish(http_serve, pki):
    """SIGTERM: GOAWAY (last stream 1, NO_ERROR) at once, not at the drain timeout; stream 1
    still gets its whole answer, stream 3 opened after the GOAWAY never reaches the upstream,
    and the connection closes when stream 1 ends (long before the 60 s timeout)."""
    slow, release, arrived = held_upstream()
    daemon, _, recorder = http_serve(slow, top={"shutdown": {"drain_timeout": "60s"}})
    host, port = daemon.addr()
    client = connect_h2(client_context(pki), host, port, TIMEOUT)
    try:
        client.get(1, "localhost", "/slow")
        assert arrived.wait(TIMEOUT), "the request never reached the upstream"
        daemon.send_signal(signal.SIGTERM)
        frame = client.next_frame()
        while frame is not None and frame.type != GOAWAY:
            frame = client.next_frame()
        assert frame is not None, "EOF before GOAWAY"
        assert goaway_fields(frame) == (1, 0)
        client.get(3, "localhost", "/after-goaway")
        release.set()
        seen: list = []
        while (frame := client.next_frame()) is not None:
            seen.append(frame)
    finally:
        release.set()
        client.sock.close()
    assert {f.stream for f in seen if f.type in (HEADERS, DATA)} == {1}, seen
    body = b"".join(f.payload for f in seen if f.type == DATA)
    assert body == b"late"
    assert any(f.flags & END_STREAM for f in seen if f.stream == 1)
    assert [r.target for r in recorder.requests] == ["/slow"]
    (line,) = wait_request_lines(daemon, 1, path="/slow")
    assert line["status"] == 200
    assert daemon.wait_exit() == 0
    conn_line = daemon.wait_for_access(termination="drain")
    assert conn_line["alpn"] == "h2"


def test_drain_start_closes_http11_after_the_response_in_progress(http_serve, pki):
    """HTTP/1.1 keep-alive: the response in flight at SIGTERM says Connection: close and the
    connection then closes; an idle keep-alive connection closes at once."""
    slow, release, arrived = held_upstream()
    # One worker: the idle connection closing proves the drain reached the busy one too (with
    # two, each worker learns of it on its own, and the busy one could answer first).
    daemon, _, _ = http_serve(slow, top={"workers": 1, "shutdown": {"drain_timeout": "60s"}})
    busy, idle = https(daemon, pki), https(daemon, pki)
    try:
        idle.request("GET", "/first")
        release.set()
        first = idle.getresponse()
        assert (first.status, first.read()) == (200, b"late")
        release.clear()
        arrived.clear()
        busy.request("GET", "/slow")
        assert arrived.wait(TIMEOUT), "the request never reached the upstream"
        daemon.send_signal(signal.SIGTERM)
        assert idle.sock.recv(1) == b"", "the idle connection stayed open"
        release.set()
        resp = busy.getresponse()
        assert (resp.status, resp.read()) == (200, b"late")
        assert resp.getheader("connection") == "close"
        assert busy.sock is None or busy.sock.recv(1) == b""
    finally:
        release.set()
        busy.close()
        idle.close()
    assert daemon.wait_exit() == 0
    assert daemon.wait_for_access(termination="drain")


def test_client_trailers_reach_an_h2c_upstream_without_x_forwarded_fields(serve, pki, tmp_path):
    """Request trailers pass to an h2c upstream (nghttpd here, printing what it receives), except
    any named like the X-Forwarded-* fields mtlsd sets, in any spelling."""
    port = free_port()
    (tmp_path / "www").mkdir()
    upstream = subprocess.Popen(["nghttpd", "--no-tls", "-v", "-d", str(tmp_path / "www"),
                                 str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        wait_listening(port)
        daemon, _ = serve(upstream=f"127.0.0.1:{port}",
                          http={"upstream_protocol": "h2c", "protocols": ["h2"]})
        host, dport = daemon.addr()
        body = tmp_path / "body"
        body.write_bytes(b"x" * 10)
        r = subprocess.run(["nghttp", "--cert", pki.path("client.crt"),
                            "--key", pki.path("client.key"), "-d", str(body),
                            "--trailer", "x-forwarded-client-cert: By=spiffe://evil",
                            "--trailer", "x_forwarded_for: 10.0.0.66",
                            "--trailer", "x-checksum: kept",
                            f"https://{host}:{dport}/t"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_request_lines(daemon, 1)
    finally:
        upstream.terminate()
        seen, _ = upstream.communicate(timeout=TIMEOUT)
    assert "x-checksum: kept" in seen, seen
    assert "evil" not in seen and "10.0.0.66" not in seen, seen


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # nghttpd says nothing when it is ready: polling is the signal
    raise AssertionError(f"nothing listens on {port}")


# --- gRPC over h2c ---------------------------------------------------------------

try:
    import grpc
except ImportError:  # only the gRPC tests need it: they skip, the others still run
    grpc = None
needs_grpc = pytest.mark.skipif(grpc is None, reason="grpcio is not installed")


def grpc_server(seen: list):
    """A grpcio server on 127.0.0.1 (h2c) with a unary echo and a bidirectional echo."""
    def unary(request, context):
        seen.append(dict(context.invocation_metadata()))
        context.set_trailing_metadata((("echo-trailer", "t1"),))
        return request

    def bidi(requests, context):
        seen.append(dict(context.invocation_metadata()))
        for r in requests:
            yield r[::-1]

    def fail(request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry")

    ident = (lambda b: b)
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def grpc_channel(daemon, pki):
    host, port = daemon.addr()
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(pki.path("ca.crt"), "rb").read(),
        private_key=open(pki.path("client.key"), "rb").read(),
        certificate_chain=open(pki.path("client.crt"), "rb").read())
    return grpc.secure_channel(f"{host}:{port}", creds,
                               options=(("grpc.ssl_target_name_override", "localhost"),))


@needs_grpc
@pytest.mark.parametrize("upstream_protocol", ["h2c", "same"])
def test_grpc_through_h2c_sees_caller_and_keeps_trailers(serve, pki, upstream_protocol):
    seen: list = []
    server, address = grpc_server(seen)
    try:
        http = {"upstream_protocol": upstream_protocol}
        if upstream_protocol == "h2c":
            http["protocols"] = ["h2"]
        daemon, _ = serve(upstream=address, http=http)
        with grpc_channel(daemon, pki) as channel:
            unary = channel.unary_unary("/test.Echo/Unary")
            reply, call = unary.with_call(b"x" * 300_000, timeout=TIMEOUT,
                                          metadata=(("x-forwarded-client-cert", FORGED),))
            assert reply == b"x" * 300_000
            assert ("echo-trailer", "t1") in call.trailing_metadata()
            bidi = channel.stream_stream("/test.Echo/Bidi")
            assert list(bidi(iter([b"abc", b"12345"]), timeout=TIMEOUT)) == [b"cba", b"54321"]
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary("/test.Echo/Fail")(b"", timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.value.details() == "no entry"
        assert seen[0]["x-forwarded-client-cert"] == client_element(pki)
        assert seen[0]["x-forwarded-for"] == "127.0.0.1"
        assert seen[0]["x-forwarded-proto"] == "https"
        lines = wait_request_lines(daemon, 3)
        assert {l["path"] for l in lines} == {"/test.Echo/Unary", "/test.Echo/Bidi",
                                              "/test.Echo/Fail"}
        assert all(l["status"] == 200 and l["protocol"] == "HTTP/2" for l in lines)
    finally:
        server.stop(0)


def test_h2c_needs_h2_only_protocols(mtlsd_bin, tmp_path, pki):
    from mtlsd_harness import daemon_config, server_listener, write_config
    cfg = daemon_config([server_listener(pki, "127.0.0.1:9", http={"upstream_protocol": "h2c"})])
    path = write_config(tmp_path / "c.yaml", cfg)
    r = subprocess.run([mtlsd_bin, "check", "--config", str(path)], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert re.search(r"upstream_protocol: h2c needs protocols: \[h2\]", r.stdout + r.stderr)


@needs_grpc
def test_grpc_cancel_reaches_the_upstream_as_rst_stream(serve, pki):
    """The client cancels a bidirectional stream mid-way: the server's RPC ends as cancelled
    (RST_STREAM passed on through mtlsd), and the line says the stream was reset."""
    import queue
    cancelled = threading.Event()

    def bidi(requests, context):
        context.add_callback(cancelled.set)
        for r in requests:
            yield r

    ident = (lambda b: b)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        daemon, _ = serve(upstream=f"127.0.0.1:{port}",
                          http={"upstream_protocol": "h2c", "protocols": ["h2"]})
        outgoing: queue.Queue = queue.Queue()
        with grpc_channel(daemon, pki) as channel:
            call = channel.stream_stream("/test.Echo/Bidi")(iter(outgoing.get, None),
                                                            timeout=TIMEOUT)
            outgoing.put(b"ping")
            assert next(call) == b"ping"       # streaming both ways, through mtlsd
            call.cancel()
            assert cancelled.wait(TIMEOUT), "the upstream never saw the cancellation"
            outgoing.put(None)
        line = wait_request_lines(daemon, 1)[0]
        assert line["path"] == "/test.Echo/Bidi" and "reset" in line["detail"]
    finally:
        server.stop(0)
