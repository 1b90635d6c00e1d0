"""One TLS connection through mtlsd offering a saved session, as the resumption tests make
them: what the client saw, whether the session resumed, the session to offer next, and the
connection's access line. Never raises for TLS failures (they land in .ex.error)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Optional

from clients import Exchange, fmt_addr
from mtlsd_harness import Mtlsd

TIMEOUT = 10.0


@dataclass
class Attempt:
    """One connection: what the client saw, whether the offered session resumed, the session to
    offer next (kept even when the server refused after the handshake: a TLS 1.3 ticket comes
    before the refusal), and the connection's access line."""
    ex: Exchange = field(default_factory=Exchange)
    reused: bool = False
    session: Optional[ssl.SSLSession] = None
    line: dict = field(default_factory=dict)

    def brief(self) -> str:
        return " ".join(f"{k}={self.line.get(k)!r}" for k in
                        ("result", "reason", "resumed", "identity", "detail"))


def attempt(daemon: Mtlsd, ctx: ssl.SSLContext, session: Optional[ssl.SSLSession] = None,
            listener: str = "inbound", source: str = "127.0.0.1",
            payload: bytes = b"ping\n") -> Attempt:
    """Connect to `listener` from `source` offering `session`, send `payload`, read its echo or
    the end. Waits for the connection's access line."""
    mark = daemon.log_mark()
    at = Attempt()
    tls = None
    raw = socket.create_connection(daemon.addr(listener), timeout=TIMEOUT,
                                   source_address=(source, 0))
    at.ex.local = fmt_addr(raw.getsockname())
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        at.ex.handshake_ok = True
        at.reused = tls.session_reused
        at.ex.version = tls.version()
        tls.sendall(payload)
        while len(at.ex.data) < len(payload):
            chunk = tls.recv(100)
            if not chunk:
                break
            at.ex.data += chunk
    except (OSError, ssl.SSLError) as exc:
        at.ex.error = exc
    finally:
        if tls is not None:
            at.session = tls.session
            tls.close()
        raw.close()
    at.line = daemon.wait_for_access(since=mark, client=at.ex.local, listener=listener)
    return at
