"""A minimal HTTP/2 client over a TLS socket, for tests that must see frames no
client library exposes (GOAWAY's last-stream-id) or send what a library would
refuse (a new stream after GOAWAY). Requests are HPACK literals without
indexing and without Huffman coding; responses are not decoded beyond frame
boundaries."""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Callable, Optional

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x7, 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


@dataclass
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes


def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags,
                                                             stream) + payload


def read_frame(exact: Callable[[int], Optional[bytes]]) -> Optional[Frame]:
    """The next frame from `exact(n)` (n bytes, or None at EOF); None at EOF."""
    head = exact(9)
    if head is None:
        return None
    length = int.from_bytes(head[:3], "big")
    ftype, flags, stream = struct.unpack(">BBI", head[3:])
    payload = exact(length) if length else b""
    return None if payload is None else Frame(ftype, flags, stream & 0x7FFFFFFF, payload)


def _hpack_literal(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127, "one-byte lengths only"
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class H2Client:
    def __init__(self, sock: ssl.SSLSocket):
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.sock.sendall(PREFACE + self._frame(SETTINGS, 0, 0, b""))

    _frame = staticmethod(frame)

    def get(self, stream: int, authority: str, path: str) -> None:
        block = b"".join(_hpack_literal(k, v) for k, v in (
            (":method", "GET"), (":scheme", "https"), (":authority", authority),
            (":path", path)))
        self.sock.sendall(self._frame(HEADERS, END_STREAM | END_HEADERS, stream, block))

    def _exact(self, n: int) -> bytes | None:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out

    def next_frame(self) -> Frame | None:
        """The next frame, None at EOF. SETTINGS are acknowledged as they come."""
        f = read_frame(self._exact)
        if f is not None and f.type == SETTINGS and not f.flags & ACK:
            self.sock.sendall(self._frame(SETTINGS, ACK, 0, b""))
        return f


def goaway_fields(frame: Frame) -> tuple[int, int]:
    """(last-stream-id, error code) of a GOAWAY frame."""
    last, code = struct.unpack(">II", frame.payload[:8])
    return last & 0x7FFFFFFF, code


def connect_h2(ctx: ssl.SSLContext, host: str, port: int, timeout: float) -> H2Client:
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection((host, port), timeout),
                           server_hostname="localhost")
    return H2Client(sock)
