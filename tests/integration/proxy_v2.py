"""A strict PROXY protocol v2 parser (haproxy's proxy-protocol.txt, section 2.2),
written from the specification and independent of mtlsd's encoder, so the
integration tests check the bytes an upstream really receives."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Optional

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER_LEN = 16

# TLV types (the standard ones and mtlsd's 0xE0..0xE4 of interface.md).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
MTLSD_SPIFFE_ID = 0xE0
MTLSD_URI_SANS = 0xE1
MTLSD_DNS_SANS = 0xE2
MTLSD_CERT_DER = 0xE3
MTLSD_CERT_SHA256 = 0xE4

PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04


class ProxyV2Error(ValueError):
    pass


@dataclass
class SslTlv:
    client: int
    verify: int
    sub: dict[int, bytes] = field(default_factory=dict)


@dataclass
class ProxyV2Header:
    command: int                      # 0 LOCAL, 1 PROXY
    family: int                       # high nibble of byte 13
    transport: int                    # low nibble of byte 13
    source: Optional[tuple] = None    # (ip, port) or unix path
    destination: Optional[tuple] = None
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)  # in wire order
    length: int = 0                   # bytes the whole header took

    def tlv(self, kind: int) -> Optional[bytes]:
        found = [v for t, v in self.tlvs if t == kind]
        if len(found) > 1:
            raise ProxyV2Error(f"TLV 0x{kind:02x} appears {len(found)} times")
        return found[0] if found else None

    @property
    def ssl(self) -> Optional[SslTlv]:
        raw = self.tlv(PP2_TYPE_SSL)
        if raw is None:
            return None
        if len(raw) < 5:
            raise ProxyV2Error(f"SSL TLV too short: {len(raw)} bytes")
        client, verify = raw[0], struct.unpack("!I", raw[1:5])[0]
        sub = {}
        for kind, value in parse_tlvs(raw[5:]):
            if kind in sub:
                raise ProxyV2Error(f"SSL sub-TLV 0x{kind:02x} repeated")
            sub[kind] = value
        return SslTlv(client, verify, sub)


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyV2Error(f"truncated TLV header at offset {pos}")
        kind, length = data[pos], struct.unpack("!H", data[pos + 1:pos + 3])[0]
        pos += 3
        if pos + length > len(data):
            raise ProxyV2Error(f"TLV 0x{kind:02x} claims {length} bytes, {len(data) - pos} left")
        out.append((kind, data[pos:pos + length]))
        pos += length
    return out


def header_length(buf: bytes) -> Optional[int]:
    """Total header length once the fixed 16 bytes are in, else None."""
    if len(buf) < HEADER_LEN:
        return None
    if buf[:12] != SIGNATURE:
        raise ProxyV2Error(f"bad signature: {buf[:12]!r}")
    return HEADER_LEN + struct.unpack("!H", buf[14:16])[0]


def parse(buf: bytes) -> ProxyV2Header:
    total = header_length(buf)
    if total is None or len(buf) < total:
        raise ProxyV2Error("incomplete header")
    ver_cmd, fam = buf[12], buf[13]
    if ver_cmd >> 4 != 2:
        raise ProxyV2Error(f"version {ver_cmd >> 4}, want 2")
    hdr = ProxyV2Header(command=ver_cmd & 0x0F, family=fam >> 4, transport=fam & 0x0F,
                        length=total)
    if hdr.command not in (0, 1):
        raise ProxyV2Error(f"unknown command {hdr.command}")
    body = buf[HEADER_LEN:total]
    if hdr.family == 0x1:        # AF_INET
        need = 12
        if len(body) < need:
            raise ProxyV2Error("short IPv4 address block")
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        hdr.source, hdr.destination = (str(src), sport), (str(dst), dport)
    elif hdr.family == 0x2:      # AF_INET6
        need = 36
        if len(body) < need:
            raise ProxyV2Error("short IPv6 address block")
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
        hdr.source, hdr.destination = (str(src), sport), (str(dst), dport)
    elif hdr.family == 0x3:      # AF_UNIX
        need = 216
        if len(body) < need:
            raise ProxyV2Error("short unix address block")
        hdr.source = body[0:108].split(b"\0", 1)[0].decode()
        hdr.destination = body[108:216].split(b"\0", 1)[0].decode()
    elif hdr.family == 0x0:      # UNSPEC
        need = 0
    else:
        raise ProxyV2Error(f"unknown address family {hdr.family}")
    hdr.tlvs = parse_tlvs(body[need:])
    return hdr


def read_header(conn) -> ProxyV2Header:
    """Read exactly one header from an upstream.UpstreamConn; leaves any payload
    that arrived with it in conn.received after the header."""
    while True:
        total = header_length(bytes(conn.received))
        if total is not None and len(conn.received) >= total:
            return parse(bytes(conn.received[:total]))
        if not conn.recv():
            raise ProxyV2Error(f"EOF after {len(conn.received)} bytes of PROXY header")


def header_then_echo(store: list):
    """Upstream handler: parse the PROXY header into `store`, then echo the
    payload (including any that arrived in the same segment as the header)."""
    from upstream import echo

    def handler(conn):
        hdr = read_header(conn)
        store.append(hdr)
        del conn.received[:hdr.length]
        if conn.received:
            conn.sendall(bytes(conn.received))
        echo(conn)
    return handler
