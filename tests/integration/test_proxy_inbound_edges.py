"""Inbound PROXY headers at their edges (a review's findings): what a partial v2 header may make
mtlsd hold, which TLV problems refuse a connection, and a v1 line ended by LF alone."""

from __future__ import annotations

import socket
import struct

import pytest

from faults import SANITIZED, client_hello, rss_kib
from helpers import wait_until
from mtlsd_harness import client_context, connect
from test_accept_proxy import ACCEPT_BOTH, V2_SIG, refused, tls_after


def v2(tlvs: bytes, src: str = "203.0.113.17", sport: int = 7) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("192.0.2.1") + struct.pack("!HH", sport, 443)
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body) + len(tlvs)) + body + tlvs


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def unread_bytes(listener_port: int, client_ports: set[int]) -> dict[int, int]:
    """The bytes still queued for mtlsd to read on its side of each of our connections (from
    /proc/net/tcp, read once): the port of each client whose socket mtlsd holds, and its count."""
    queued = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            fields = row.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if local == listener_port and remote in client_ports:
                queued[remote] = int(fields[4].split(":")[1], 16)
    return queued


def hold_partial_v2(daemon, count: int) -> list[socket.socket]:
    """`count` connections that each sent the 16 fixed bytes of a v2 header announcing 65,535
    more, and nothing else; returns once mtlsd has read those bytes on every one of them."""
    socks = []
    for _ in range(count):
        s = connect(daemon.addr())
        s.sendall(V2_SIG + bytes([0x21, 0x11, 0xff, 0xff]))
        socks.append(s)
    port = daemon.addr()[1]
    ports = {s.getsockname()[1] for s in socks}

    def all_read():
        queued = unread_bytes(port, ports)
        return len(queued) == count and not any(queued.values())
    wait_until(all_read, 30, "mtlsd reading the 16 bytes on every connection")
    return socks


@pytest.mark.skipif(SANITIZED, reason="RSS under ASan is shadow memory and quarantine")
def test_a_partial_v2_header_holds_what_came_not_what_it_announced(serve, pki):
    # Review: the announced length was allocated (zero-filled) as soon as the 16 fixed bytes
    # came, ~70 KiB per socket held until timeouts.handshake. A silent socket costs ~5 KiB.
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH, timeouts={"handshake": "60s"})
    held = hold_partial_v2(daemon, 20)  # warms the allocator's arenas up
    before = rss_kib(daemon.pid)
    held += hold_partial_v2(daemon, 300)
    per_socket = (rss_kib(daemon.pid) - before) / 300
    for s in held:
        s.close()
    print(f"\nRSS per socket holding a partial v2 header: {per_socket:.1f} KiB")
    assert per_socket < 24, f"{per_socket:.1f} KiB per socket that sent 16 bytes"
    up.assert_untouched()


def test_a_repeated_custom_or_unknown_tlv_is_skipped(serve, pki):
    # Review: any type seen twice refused the connection, custom ones (0xE0-0xEF) included.
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH)
    header = v2(tlv(0xEA, b"a") + tlv(0xEA, b"b") + tlv(0x99, b"") + tlv(0x99, b"x"))
    _, data = tls_after(daemon, header, client_context(pki, "client"))
    assert data == b"ping\n", data
    daemon.wait_for_access(client="203.0.113.17:7", result="accepted")


def test_tlv_problems_that_still_refuse_a_v2_header(serve, pki):
    # One of the specification's own types twice, and what HAProxy refuses too.
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH)
    line = refused(daemon, up, v2(tlv(0x01, b"h2") + tlv(0x01, b"h2")), "protocol_error")
    assert line["detail"] == "PROXY v2: PROXY v2 TLV type 1 repeated", line
    line = refused(daemon, up, v2(tlv(0x05, b"u" * 129)), "protocol_error")
    assert "UNIQUE_ID TLV longer than 128 bytes" in line["detail"], line


def test_a_line_ended_by_lf_alone_is_refused_for_that_whatever_follows(serve, pki):
    # Review: alone it was "a control character", with the ClientHello in the same segment
    # "longer than 107 bytes" (the reader took the ClientHello's bytes too).
    daemon, up = serve(accept_proxy_protocol=ACCEPT_BOTH)
    line = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\n"
    hello = client_hello(client_context(pki, "client"))
    for sent in (line, line + hello):
        refused_line = refused(daemon, up, sent, "protocol_error")
        assert refused_line["detail"] == "PROXY v1 line ends in LF without CR", refused_line
