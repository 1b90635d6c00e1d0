"""The limits of HTTP/2 in `http:` mode (README "HTTP/2 and gRPC"), seen from real clients:
end-to-end flow control (a slow reader on either side holds mtlsd's memory to the windows, and
the transfer completes intact once it reads again), max_concurrent_streams, the 64 KiB header
list (431), stream_idle_timeout, and GOAWAY when a reload no longer admits the peer.

The client is hyper-h2 driven by hand (h2_client.py) where a test needs to decide when DATA is
acknowledged or which streams open before SETTINGS are acknowledged; nghttp elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import h2.errors
import h2.events
import pytest

from h2_client import H2Client, status_of
from http_upstream import HttpRecorder, Reader, parse_head, response
from mtlsd_harness import daemon_config, server_listener, write_config
from test_http_mode import http_serve  # noqa: F401

TIMEOUT = 20
BIG = 64 * 1024 * 1024          # far above every window and socket buffer on the way
STALL = 1.0                      # no progress for this long while the other side waits: stalled
STREAM_WINDOW = 65535            # RFC 9113's initial stream window, which mtlsd keeps
RSS_SLACK = 4 * 1024 * 1024      # what mtlsd may grow by while holding a stalled BIG transfer


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_blob() -> bytes:
    return os.urandom(1 << 20) * (BIG >> 20)


def request_lines(daemon, **match):
    return [line for line in daemon.logs() if line.get("msg") == "request"
            and all(line.get(k) == v for k, v in match.items())]


def wait_request_line(daemon, **match) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") == "request"
                               and all(l.get(k) == v for k, v in match.items()))


# --- flow control end to end -----------------------------------------------------------

def gated_sink(arrived: threading.Event, gate: threading.Event):
    """An HTTP/1.1 upstream that reads a request's head, then nothing until `gate`; then the
    whole body, answering with its length and SHA-256."""
    def handle(conn) -> None:
        reader = Reader(conn)
        head = reader.until(b"\r\n\r\n")
        if head is None:
            return
        _, _, _, headers = parse_head(head)
        length = int(dict((k.lower(), v) for k, v in headers)["content-length"])
        arrived.set()
        gate.wait(TIMEOUT * 3)
        body = reader.exact(length)
        conn.sendall(response(200, json.dumps({
            "body_len": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()))
    return handle


def test_slow_upstream_reader_stalls_the_upload_with_bounded_memory(http_serve, pki):
    arrived, gate = threading.Event(), threading.Event()
    daemon, _, _ = http_serve(handler=gated_sink(arrived, gate))
    blob = memoryview(big_blob())
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/up", method="POST", end_stream=False,
                             extra=(("content-length", str(BIG)),))
        baseline = rss(daemon.pid)
        sent = 0
        while sent < BIG:                 # until no WINDOW_UPDATE comes for STALL seconds
            n = client.send_within_window(sid, blob[sent:])
            sent += n
            if n == 0 and not client.pump(STALL):
                break
        assert arrived.wait(TIMEOUT), "the request never reached the upstream"
        stalled_at, grown = sent, rss(daemon.pid) - baseline
        assert stalled_at < BIG // 4, f"the upload ran on to {stalled_at} bytes"
        assert grown < RSS_SLACK, f"mtlsd grew by {grown} bytes holding a stalled upload"

        gate.set()                        # the upstream reads again: the window reopens
        while sent < BIG:
            n = client.send_within_window(sid, blob[sent:])
            sent += n
            if n == 0:
                client.pump(TIMEOUT)
        client.conn.end_stream(sid)
        client.flush()
        status, body = client.response(sid, TIMEOUT * 3)
    finally:
        client.close()
    assert status == 200
    assert json.loads(body) == {"body_len": BIG, "sha256": hashlib.sha256(blob).hexdigest()}
    line = wait_request_line(daemon, path="/up")
    assert line["req_bytes"] == BIG and line["status"] == 200


def firehose(blob: bytes, progress: dict):
    """An HTTP/1.1 upstream answering any request with `blob`, 256 KiB per write, counting
    what the kernel took in progress["sent"]."""
    def handle(conn) -> None:
        if Reader(conn).until(b"\r\n\r\n") is None:
            return
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(blob)}\r\n\r\n".encode())
        view = memoryview(blob)
        for i in range(0, len(blob), 256 * 1024):
            conn.sendall(view[i:i + 256 * 1024])
            progress["sent"] = i + len(view[i:i + 256 * 1024])
    return handle


def test_client_that_stops_acknowledging_stalls_the_download_with_bounded_memory(
        http_serve, pki):
    """The client keeps reading the socket but sends no WINDOW_UPDATE: it receives at most one
    stream window, the upstream is held back, mtlsd keeps little; acknowledging resumes it."""
    blob = big_blob()
    progress = {"sent": 0}
    daemon, _, _ = http_serve(handler=firehose(blob, progress))
    client = H2Client(daemon, pki, ack_data=False)
    try:
        baseline = rss(daemon.pid)
        sid = client.request("/down")
        client.wait_for(lambda ev: isinstance(ev, h2.events.ResponseReceived), TIMEOUT)
        while client.pump(STALL):         # until nothing more arrives for STALL seconds
            pass
        got, upstream_sent = len(client.bodies[sid]), progress["sent"]
        grown = rss(daemon.pid) - baseline
        assert 0 < got <= STREAM_WINDOW, got
        assert upstream_sent < BIG // 4, f"the upstream could send {upstream_sent} bytes"
        assert grown < RSS_SLACK, f"mtlsd grew by {grown} bytes holding a stalled download"

        client.ack_data = True            # acknowledge what came, and all that comes
        client.conn.acknowledge_received_data(got, sid)
        client.flush()
        status, body = client.response(sid, TIMEOUT * 3)
    finally:
        client.close()
    assert status == 200 and len(body) == BIG
    assert hashlib.sha256(body).digest() == hashlib.sha256(blob).digest()
    assert wait_request_line(daemon, path="/down")["resp_bytes"] == BIG
