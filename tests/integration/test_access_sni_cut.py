"""The SNI a client sends is cut in the access line like every other field a peer controls
(1 KiB, then how many more bytes there were). Review (t11_longsni.py): a 15,000-byte server name,
which OpenSSL refuses (a host name has at most 255 bytes), reached the refusal's line whole up to
the 8 KiB every log field is cut at."""

from __future__ import annotations

import os
import socket
import struct

import pytest

ACCESS_FIELD_LIMIT = 1024


def client_hello(sni: bytes) -> bytes:
    """A TLS 1.2 ClientHello naming `sni`, in as many records as it takes."""
    name = b"\x00" + struct.pack(">H", len(sni)) + sni
    names = struct.pack(">H", len(name)) + name
    exts = struct.pack(">HH", 0, len(names)) + names
    groups = struct.pack(">H", 4) + b"\x00\x1d\x00\x17"
    exts += struct.pack(">HH", 10, len(groups)) + groups
    sigalgs = struct.pack(">H", 4) + b"\x04\x03\x08\x04"
    exts += struct.pack(">HH", 13, len(sigalgs)) + sigalgs
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack(">H", 4) + b"\xc0\x2b\xc0\x2f"
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"".join(b"\x16\x03\x01" + struct.pack(">H", len(hs[i:i + 16384])) + hs[i:i + 16384]
                    for i in range(0, len(hs), 16384))


@pytest.mark.parametrize("size", [15000, ACCESS_FIELD_LIMIT + 1])
def test_a_long_sni_is_cut_at_1_kib(serve, size):
    daemon, _ = serve()
    with socket.create_connection(daemon.addr(), timeout=5) as s:
        s.sendall(client_hello(b"a" * size))
        local = "%s:%d" % s.getsockname()[:2]
        s.recv(100)  # the alert
    line = daemon.wait_for_access(client=local)
    assert line["result"] == "rejected" and line["reason"] == "protocol_error", line
    more = size - ACCESS_FIELD_LIMIT
    assert line["sni"] == "a" * ACCESS_FIELD_LIMIT + f"...({more} more bytes)", line["sni"][-40:]


def test_an_sni_of_1_kib_is_whole(serve):
    daemon, _ = serve()
    with socket.create_connection(daemon.addr(), timeout=5) as s:
        s.sendall(client_hello(b"b" * ACCESS_FIELD_LIMIT))
        local = "%s:%d" % s.getsockname()[:2]
        s.recv(100)
    line = daemon.wait_for_access(client=local)
    assert line["sni"] == "b" * ACCESS_FIELD_LIMIT, len(line["sni"])
