"""A tiny UDP DNS server on 127.0.0.1 for `dns.servers` tests.

DnsServer(answers={"up.dns-test": "127.0.0.1"}, ttl=30) answers A queries for
those names (AAAA: no records; other names: NXDOMAIN). A name's answer may also be
a list of IPv4 addresses, {"up.dns-test": ["127.0.0.2", "127.0.0.1"]}: one A record
each, in that order (an empty list: no records). DnsServer(silent=True)
reads every query and never answers: a DNS outage. Either way it counts the
queries it saw per name. Parses just enough of a query: the header and the
first question.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from typing import Optional, Union

QTYPE_A = 1


def _question(packet: bytes) -> Optional[tuple[str, int, int]]:
    """(name, qtype, end offset of the question) or None when malformed."""
    labels, i = [], 12
    while i < len(packet) and packet[i] != 0:
        n = packet[i]
        if n & 0xC0:  # compression never appears in a question we send ourselves
            return None
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += n + 1
    if i + 5 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[i + 1:i + 3])[0]
    return ".".join(labels).lower(), qtype, i + 5


class DnsServer:
    def __init__(self, answers: Optional[dict[str, Union[str, list[str]]]] = None, *,
                 silent: bool = False, ttl: int = 30):
        self.answers = {k.lower(): v for k, v in (answers or {}).items()}
        self.silent = silent
        self.ttl = ttl
        self.queries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, name: str) -> int:
        with self._lock:
            return self.queries[name.lower()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            q = _question(packet) if len(packet) >= 17 else None
            if q is None:
                continue
            name, qtype, end = q
            with self._lock:
                self.queries[name] += 1
            if self.silent:
                continue
            ips = self.answers.get(name)
            if isinstance(ips, str):  # one address: one record
                ips = [ips]
            records = ips if ips is not None and qtype == QTYPE_A else []
            rcode = 0 if ips is not None else 3  # NXDOMAIN for names we do not know
            header = packet[:2] + struct.pack("!BBHHHH", 0x81, 0x80 | rcode, 1,
                                              len(records), 0, 0)
            body = packet[12:end]
            for ip in records:
                body += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, self.ttl, 4)
                body += socket.inet_aton(ip)
            self._sock.sendto(header + body, peer)
