"""A hand-driven HTTP/2 client over mTLS (hyper-h2, python3-h2) for tests that need to control
what a real client library normally hides: when received DATA is acknowledged (WINDOW_UPDATE),
how far the send window lets an upload go, streams opened before the server's SETTINGS were
acknowledged, and which frames (RST_STREAM, GOAWAY) the server sent.

Nothing here is mtlsd-specific: the client speaks HTTP/2 as RFC 9113 says, through h2's state
machine, over Python's ssl with ALPN h2."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Callable, Optional

import h2.config
import h2.connection
import h2.events

from clients import client_context


class H2Client:
    def __init__(self, daemon, pki, cert: str = "client", *, ack_data: bool = True,
                 send_preface: bool = True, rcvbuf: int = 0):
        ctx = client_context(pki, cert)
        ctx.set_alpn_protocols(["h2"])
        host, port = daemon.addr()
        raw = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:  # before connecting: the window the client's kernel offers follows it
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(10)
        raw.connect((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait per window
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.ack_data = ack_data          # False: received DATA is never acknowledged
        self.events: list = []
        self.bodies: dict[int, bytearray] = {}
        self.closed = False
        if send_preface:
            self.conn.initiate_connection()
            self.flush()

    # --- sending ---------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, *, method: str = "GET", extra: tuple = (),
                end_stream: bool = True, flush: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":authority", "localhost"),
                   (":path", path), *extra]
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.bodies[sid] = bytearray()
        if flush:
            self.flush()
        return sid

    def send_within_window(self, sid: int, data: memoryview) -> int:
        """Sends as much of `data` as the flow-control windows allow now; returns how much."""
        room = min(self.conn.local_flow_control_window(sid), len(data))
        sent = 0
        frame = self.conn.max_outbound_frame_size
        while sent < room:
            n = min(frame, room - sent)
            self.conn.send_data(sid, data[sent:sent + n].tobytes())
            sent += n
        self.flush()
        return sent

    # --- receiving -------------------------------------------------------------------------

    def pump(self, timeout: float) -> list:
        """One read (up to `timeout`), fed to h2; returns the new events ([] on timeout)."""
        if self.closed:
            return []
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return []
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return []
        new = self.conn.receive_data(data)
        for ev in new:
            if isinstance(ev, h2.events.DataReceived):
                self.bodies[ev.stream_id] += ev.data
                if self.ack_data:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.events += new  # before answering: a server that closed must not lose what it sent
        try:
            self.flush()
        except OSError:
            self.closed = True
        return new

    def wait_for(self, match: Callable[[object], bool], timeout: float = 10.0):
        """The first event (already seen or new) that `match`es, or AssertionError."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if match(ev):
                    return ev
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no matching event in {timeout}s; got {self.events}")
            self.pump(left)

    def refused_with(self, error_code, debug_data: bytes, timeout: float = 10.0) -> None:
        """The server's GOAWAY names no stream as processed (none of ours was taken), with this
        error code and debug data; AssertionError otherwise."""
        goaway = self.wait_for(lambda ev: isinstance(ev, h2.events.ConnectionTerminated), timeout)
        assert goaway.last_stream_id == 0, goaway
        assert goaway.error_code == error_code, goaway
        assert goaway.additional_data == debug_data, goaway

    def answered_then_goaway(self, sid: int, status: int, error_code, why: bytes,
                             timeout: float = 10.0) -> None:
        """Stream `sid` got `status` with `why` as its text, then the server's GOAWAY named it
        as the last stream processed, with this error code and `why` as debug data (how mtlsd
        answers a client it refused after the handshake); AssertionError otherwise."""
        assert self.response(sid, timeout) == (status, why + b"\n")
        goaway = self.wait_for(lambda ev: isinstance(ev, h2.events.ConnectionTerminated), timeout)
        assert goaway.last_stream_id == sid, goaway
        assert goaway.error_code == error_code, goaway
        assert goaway.additional_data == why, goaway

    def response(self, sid: int, timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, body) once the stream ended, or AssertionError (e.g. on a reset)."""
        self.wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
                      and ev.stream_id == sid, timeout)
        ended = [ev for ev in self.events if getattr(ev, "stream_id", None) == sid]
        assert not any(isinstance(ev, h2.events.StreamReset) for ev in ended), ended
        return status_of(ended), bytes(self.bodies[sid])

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def status_of(events: list) -> Optional[int]:
    for ev in events:
        if isinstance(ev, h2.events.ResponseReceived):
            return int(dict(ev.headers)[":status"])
    return None
