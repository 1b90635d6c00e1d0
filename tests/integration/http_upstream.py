"""HTTP/1.1 upstreams for the `http:` block tests, built on upstream.Upstream so
connections and raw bytes stay countable.

The parser here is deliberately strict and independent of mtlsd (Content-Length
or chunked bodies, keep-alive) so that a test proves what actually went over the
wire: each parsed request keeps every header line, in order, as received.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from upstream import Handler, UpstreamConn

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class HttpRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    conn_id: int = 0               # which upstream connection carried it
    trailers: list[tuple[str, str]] = field(default_factory=list)   # a chunked body's

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> Optional[str]:
        values = self.get_all(name)
        return values[0] if values else None

    @property
    def xfcc(self) -> list[str]:
        return self.get_all("x-forwarded-client-cert")


class Reader:
    """Buffered reads over an UpstreamConn (every byte is still recorded there)."""

    def __init__(self, conn: UpstreamConn):
        self.conn = conn
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.conn.recv()
        self.buf += data
        return bool(data)

    def until(self, marker: bytes) -> Optional[bytes]:
        while marker not in self.buf:
            if not self._fill():
                if self.buf:
                    raise ConnectionError(f"EOF inside a message: {bytes(self.buf[:80])!r}")
                return None
        i = self.buf.index(marker) + len(marker)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"EOF with {len(self.buf)}/{n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return method, target, version, headers


def read_request(reader: Reader, conn_id: int = 0) -> Optional[HttpRequest]:
    head = reader.until(b"\r\n\r\n")
    if head is None:
        return None
    req = HttpRequest(*parse_head(head), conn_id=conn_id)
    te = (req.get("transfer-encoding") or "").lower()
    if te:
        assert te == "chunked", f"unexpected Transfer-Encoding {te!r}"
        assert req.get("content-length") is None, "both Content-Length and chunked"
        req.chunked = True
        body = bytearray()
        while True:
            size_line = reader.until(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # the trailer section, ended by an empty line
                while (line := reader.until(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode("latin-1").partition(":")
                    req.trailers.append((name, value.strip()))
                break
            body += reader.exact(size)
            assert reader.exact(2) == b"\r\n", "chunk not followed by CRLF"
        req.body = bytes(body)
    elif req.get("content-length") is not None:
        req.body = reader.exact(int(req.get("content-length")))
    return req


def wants_close(req: HttpRequest) -> bool:
    conn = (req.get("connection") or "").lower()
    return "close" in conn or (req.version == "HTTP/1.0" and "keep-alive" not in conn)


def describe(req: HttpRequest) -> bytes:
    """The default answer: what the upstream saw, as JSON."""
    return json.dumps({
        "method": req.method, "target": req.target, "xfcc": req.xfcc,
        "body_len": len(req.body), "body_sha256": hashlib.sha256(req.body).hexdigest(),
        "chunked": req.chunked, "conn_id": req.conn_id,
    }).encode()


def response(status: int, body: bytes, *, chunks: Optional[list[bytes]] = None,
             extra: tuple = (), head_only: bool = False, reason: str = "OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", *extra]
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        out = [("\r\n".join(lines) + "\r\n\r\n").encode()]
        if head_only:
            return out[0]
        for c in chunks:
            out += [b"%x\r\n" % len(c), c, b"\r\n"]
        return b"".join(out) + b"0\r\n\r\n"
    lines.append(f"Content-Length: {len(body)}")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return out if head_only else out + body


App = Callable[[HttpRequest], bytes]


def default_app(req: HttpRequest) -> bytes:
    body = describe(req)
    if req.target.startswith("/chunked"):
        # The description, then 64 KiB of pattern, in uneven chunks.
        payload = body + b"\n" + bytes(range(256)) * 256
        chunks = [payload[i:i + 7000] for i in range(0, len(payload), 7000)]
        return response(200, b"", chunks=chunks, head_only=req.method == "HEAD")
    return response(200, body, head_only=req.method == "HEAD")


class HttpRecorder:
    """An upstream handler factory that parses and records every request."""

    def __init__(self, app: App = default_app):
        self.app = app
        self.requests: list[HttpRequest] = []
        self._next_conn = 0

    def handler(self) -> Handler:
        def handle(conn: UpstreamConn) -> None:
            self._next_conn += 1
            conn_id = self._next_conn
            reader = Reader(conn)
            while True:
                req = read_request(reader, conn_id)
                if req is None:
                    break
                self.requests.append(req)
                conn.sendall(self.app(req))
                if wants_close(req):
                    break
            conn.shutdown_write()
        return handle


# --- WebSocket (RFC 6455), just enough for an echo ---------------------------

def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_frame(payload: bytes, opcode: int = 0x1, mask: Optional[bytes] = None) -> bytes:
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def ws_read_frame(read_exact: Callable[[int], bytes]) -> tuple[int, bytes]:
    b0, b1 = read_exact(2)
    opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(8))[0]
    mask = read_exact(4) if masked else None
    payload = read_exact(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def websocket_echo(recorder: Optional[list] = None) -> Handler:
    """Answer one WebSocket upgrade with 101, then echo every data frame
    (unmasked, as a server must) until a close frame, which is echoed too."""
    def handle(conn: UpstreamConn) -> None:
        reader = Reader(conn)
        req = read_request(reader)
        if req is None:
            return
        if recorder is not None:
            recorder.append(req)
        if (req.get("upgrade") or "").lower() != "websocket":
            conn.sendall(response(400, b"not a websocket upgrade", reason="Bad Request"))
            return
        conn.sendall((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {ws_accept(req.get('sec-websocket-key'))}\r\n\r\n").encode())
        while True:
            opcode, payload = ws_read_frame(reader.exact)
            conn.sendall(ws_frame(payload, opcode))
            if opcode == 0x8:
                break
        conn.shutdown_write()
    return handle
