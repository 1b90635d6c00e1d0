"""Fault injection for the integration tests: misbehaving clients and upstreams, and what a
test measures about the daemon meanwhile (RSS, CPU time, the active-connection gauge).

Everything here is bounded: loops have deadlines, sockets have timeouts, and no helper
buffers more than a few MiB in the test process, so a fault test cannot exhaust the machine
it is meant to measure.
"""

from __future__ import annotations

import fcntl
import os
import select
import resource
import selectors
import socket
import ssl
import struct
import termios
import threading
import time
from typing import Callable, Optional

from clients import connect, curl, echo_roundtrip, s_client
from helpers import wait_until
from pki import Pki

# Under ASan/UBSan the daemon's memory is shadow memory plus quarantine, and its CPU time is
# several times the normal build's: RSS bounds are meaningless there and heavy counts too slow.
SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"

CLK_TCK = os.sysconf("SC_CLK_TCK")

HTTP_BODY = b"healthy"
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % len(HTTP_BODY)) + HTTP_BODY


# --- waiting and measuring ------------------------------------------------------

def becomes(condition: Callable[[], object], within: float, interval: float = 0.005) -> bool:
    """Whether `condition` holds at some poll before `within` seconds have passed."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def rss_kib(pid: int) -> int:
    """Resident set size from /proc/PID/status (VmRSS, in KiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; everything after its ')' is space-separated,
    # starting at field 3, so utime (14) and stime (15) are at 11 and 12.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_over(pid: int, seconds: float) -> float:
    """CPU seconds the process used during the next `seconds` of wall time."""
    before = cpu_seconds(pid)
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    return cpu_seconds(pid) - before


def holds_peer(pid: int, peer_port: int) -> bool:
    """Whether process `pid` has a TCP socket whose remote end is local port `peer_port`:
    i.e. it has accepted that client's connection (and has not closed it)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                fields = row.split()
                # fields: sl local_address rem_address st ... uid timeout inode
                if int(fields[2].rsplit(":", 1)[1], 16) == peer_port and fields[9] in inodes:
                    return True
    return False


def queued(local_port: int, remote_port: int) -> tuple[int, int]:
    """(send queue, receive queue) in bytes of the loopback TCP socket local_port ->
    remote_port, whoever owns it, from /proc/net/tcp{,6}."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                fields = row.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == local_port
                        and int(fields[2].rsplit(":", 1)[1], 16) == remote_port):
                    tx, rx = fields[4].split(":")
                    return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no TCP socket {local_port} -> {remote_port}")


def active(daemon, listener: str = "inbound") -> float:
    return daemon.scrape().get("mtlsd_connections_active", listener=listener)


def wait_active(daemon, want: Callable[[float], bool], timeout: float, what: str,
                listener: str = "inbound") -> float:
    """Poll the mtlsd_connections_active gauge until want(value)."""
    last = [None]

    def check():
        last[0] = active(daemon, listener)
        return want(last[0])
    try:
        wait_until(check, timeout, what, interval=0.05)
    except AssertionError as e:
        raise AssertionError(f"{e}; mtlsd_connections_active{{listener={listener}}} "
                             f"= {last[0]}") from None
    return last[0]


def raise_nofile(want: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards `want` (never above the hard limit);
    returns the previous limits so the caller can restore them."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return old


def nofile_soft() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_limit(n: int) -> Callable[[], None]:
    """A preexec_fn: the daemon runs as under `ulimit -n n` (soft and hard)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def lower_fd_limit(pid: int, n: int) -> None:
    """Lowers a running process's RLIMIT_NOFILE (soft and hard) to `n`, below the budget for
    connections it derived from the limit at start: its accepts then fail with EMFILE, as when
    descriptors go to something other than connections (a daemon started under `ulimit -n n`
    refuses connections past its budget instead, before it runs out)."""
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, n))


def fd_limit_to_hard() -> None:
    """A preexec_fn: soft RLIMIT_NOFILE = hard, as a service manager's LimitNOFILE would give."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- misbehaving clients --------------------------------------------------------

def rst_close(sock: socket.socket) -> None:
    """Vanish: close with SO_LINGER 0, so the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The exact bytes a real client (this context) sends first: its ClientHello record(s)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def tls10_client_hello() -> bytes:
    """A ClientHello that offers TLS 1.0 only (no supported_versions extension), built by hand
    because today's OpenSSL refuses to build one at its default security level."""
    ciphers = [0xC014, 0xC013, 0x0035, 0x002F]  # ECDHE-RSA-AES*-SHA, AES*-SHA
    name = b"localhost"
    sni = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    groups = struct.pack("!HHHH", 10, 4, 2, 23)          # supported_groups: secp256r1
    point_formats = struct.pack("!HHBB", 11, 2, 1, 0)    # ec_point_formats: uncompressed
    extensions = sni + groups + point_formats
    body = (b"\x03\x01" + os.urandom(32) + b"\x00"
            + struct.pack("!H", 2 * len(ciphers)) + b"".join(struct.pack("!H", c) for c in ciphers)
            + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, Optional[str], float]:
    """Read until the peer closes. Returns (bytes, 'eof' | 'reset' | 'timeout', elapsed)."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    how = None
    while how is None:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            how = "reset"
        except (socket.timeout, TimeoutError):
            how = "timeout"
        else:
            if chunk:
                data += chunk
            else:
                how = "eof"
    return data, how, time.monotonic() - start


def open_connections(addr, n: int, *, first_bytes: bytes = b"", batch: int = 500,
                     after_batch: Optional[Callable[[int], None]] = None) -> list[socket.socket]:
    """`n` TCP connections (each sends `first_bytes`), in batches; `after_batch(opened)` runs
    after each batch, e.g. to wait until the daemon has accepted them so the listen backlog
    never overflows (an overflowing backlog drops SYNs and connect() then stalls for 1 s)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            for _ in range(min(batch, n - len(socks))):
                s = connect(addr, timeout=10)
                if first_bytes:
                    s.sendall(first_bytes)
                socks.append(s)
            if after_batch:
                after_batch(len(socks))
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list, rst: bool = False) -> None:
    for s in socks:
        try:
            rst_close(s) if rst else s.close()
        except OSError:
            pass
    socks.clear()


def real_clients_served(daemon, pki: Pki, listener: str = "inbound", *, rounds: int = 2,
                        timeout: float = 5.0) -> list[float]:
    """Real clients with client certificates: Python ssl, curl and openssl s_client, each
    `rounds` times, each within `timeout`. Fails naming the first that was not served;
    returns every client's wall time (seconds)."""
    addr = daemon.addr(listener)
    from clients import client_context  # the one context type every suite client uses
    ctx = client_context(pki, "client")
    times: list[float] = []
    for _ in range(rounds):
        start = time.monotonic()
        ex = echo_roundtrip(addr, ctx, b"real client\n")
        assert ex.error is None and ex.data == b"real client\n", (
            f"Python ssl client not served on {listener}: {ex.error!r} after {ex.elapsed:.2f}s")
        times.append(time.monotonic() - start)

        start = time.monotonic()
        res = curl(addr, pki, timeout=timeout)
        assert res.returncode == 0 and res.stdout == HTTP_BODY, (
            f"curl not served on {listener}: rc={res.returncode} {res.stderr[-300:]!r}")
        times.append(time.monotonic() - start)

        start = time.monotonic()
        # s_client -quiet keeps the connection after its stdin ends; an HTTP request makes
        # the upstream answer and close, and so ends it.
        res = s_client(addr, pki, data=b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                       timeout=timeout)
        assert res.stdout.endswith(HTTP_BODY), (
            f"openssl s_client not served on {listener}: rc={res.returncode} "
            f"{res.stderr[-300:]!r}")
        times.append(time.monotonic() - start)
    assert max(times) < timeout, f"a real client took {max(times):.2f}s (> {timeout}s)"
    return times


# --- upstreams ------------------------------------------------------------------

class SelectorUpstream:
    """A healthy upstream for thousands of connections in one thread (the threaded
    upstream.Upstream would need a thread each): echoes what arrives, except that a
    connection whose first bytes are `GET ` gets one HTTP 200 (so curl works too).

    Writes are non-blocking with a per-connection buffer; a connection whose buffer holds
    more than 1 MiB is not read until it drains (backpressure, not buffering)."""

    MAX_BUFFERED = 1 << 20

    def __init__(self, host: str = "127.0.0.1"):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.bind((host, 0))
        self._lsock.listen(4096)
        self._lsock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._lsock, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self.accepted = 0
        self.open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._lsock.getsockname()
        return f"{host}:{port}"

    class _Conn:
        __slots__ = ("sock", "inbuf", "outbuf", "http", "closing")

        def __init__(self, sock):
            self.sock, self.inbuf, self.outbuf = sock, b"", bytearray()
            self.http: Optional[bool] = None
            self.closing = False

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, mask in self._sel.select(0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._service(key.data, mask)

    def _accept(self) -> None:
        for _ in range(256):
            try:
                sock, _ = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the test's fd budget; the next select retries
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, self._Conn(sock))
            with self._lock:
                self.accepted += 1
                self.open += 1

    def _drop(self, c: "_Conn") -> None:
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        with self._lock:
            self.open -= 1

    def _service(self, c: "_Conn", mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                data = c.sock.recv(65536)
                if not data:
                    if c.outbuf:
                        c.closing = True
                    else:
                        self._drop(c)
                        return
                elif c.http is None and b"GET ".startswith(c.inbuf + data):
                    c.inbuf += data  # could still become "GET ": wait for more
                else:
                    data, c.inbuf = c.inbuf + data, b""
                    if c.http is None:
                        c.http = data.startswith(b"GET ")
                    if c.http:
                        c.inbuf = data  # wait for the end of the request head
                        if b"\r\n\r\n" in c.inbuf:
                            c.outbuf += HTTP_RESPONSE
                            c.closing = True
                    else:
                        c.outbuf += data
            if c.outbuf:
                try:
                    sent = c.sock.send(c.outbuf)
                    del c.outbuf[:sent]
                except BlockingIOError:
                    pass
            if c.closing and not c.outbuf:
                self._drop(c)
                return
            events = 0 if len(c.outbuf) > self.MAX_BUFFERED or c.closing else selectors.EVENT_READ
            if c.outbuf:
                events |= selectors.EVENT_WRITE
            self._sel.modify(c.sock, events or selectors.EVENT_WRITE, c)
        except OSError:
            self._drop(c)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()


def refusing_address() -> str:
    """An address where nothing listens, so a connect is refused: a loopback port just freed
    (nothing else on this machine binds loopback ports it did not ask the kernel for)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def reset_after(n: int, reply: bytes = b"partial answer"):
    """Upstream handler: read `n` bytes, send `reply`, then reset the connection (RST)."""
    def handler(conn) -> None:
        while len(conn.received) < n:
            if not conn.recv():
                return
        conn.sendall(reply)
        rst_close(conn.sock)
    return handler


def never_reads(release: threading.Event):
    """Upstream handler: accept and read nothing until `release` (or the test ends)."""
    def handler(conn) -> None:
        release.wait(120)
    return handler


def pushes(total: int, chunk: int = 64 * 1024):
    """Upstream handler: send `total` bytes as fast as the proxy takes them. conn.sent counts
    what the kernel accepted, so a test sees the push stall."""
    block = b"\xa5" * chunk

    def handler(conn) -> None:
        conn.sock.settimeout(None)
        while conn.sent < total:
            n = conn.sock.send(block[:min(chunk, total - conn.sent)])
            conn.sent += n
    return handler


def unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                          struct.pack("i", 0)))[0]


def pushes_then(end: str, stalled: threading.Event, ended: threading.Event,
                release: threading.Event, quiet: float = 1.0, chunk: int = 16 * 1024):
    """Upstream handler for a proxy whose client does not read: push until the proxy stops
    relaying, set `stalled`, then end and set `ended`:
    - "reset": push until the proxy takes nothing for `quiet` seconds, then RST (the kernel
      sends it ahead of anything still queued);
    - "fin": push a chunk at a time, each only once the previous one reached the proxy, until
      bytes sit unread in the proxy's receive queue for `quiet` seconds (its write towards
      the client is stalled); then shutdown(SHUT_WR), so the FIN lands behind bytes the proxy
      has not read (a FIN queued behind our own unsent bytes would reach nobody), and stay
      open, reading nothing, until `release`.
    Either way `conn.end_at` is the time.monotonic() taken just before the RST or FIN went out:
    certainly before the proxy could learn of it, so a test can measure from there."""
    block = b"\xa5" * chunk

    def handler(conn) -> None:
        if end == "reset":
            conn.sock.settimeout(quiet)
            try:
                while True:
                    conn.sent += conn.sock.send(block)
            except (socket.timeout, TimeoutError):
                pass
            stalled.set()
            conn.end_at = time.monotonic()
            rst_close(conn.sock)
            ended.set()
            return
        proxy_end = (conn.sock.getpeername()[1], conn.sock.getsockname()[1])
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the proxy never stalled"
            conn.sendall(block)
            wait_until(lambda: unsent(conn.sock) == 0, 10, "a chunk to reach the proxy",
                       interval=0.001)
            backlog = queued(*proxy_end)[1]
            # A measurement window: does the proxy read the backlog meanwhile? It ends as soon as
            # the proxy does, so a slow proxy (ASan on a busy machine) that is merely behind does
            # not pay the whole window per chunk (CI once pushed only 1.7 of the ~3 MiB its
            # send buffer towards the client takes in 30 s so, with a fixed wait per chunk).
            # The whole `quiet` is paid only once, at the real stall; a shorter window would
            # take a proxy descheduled for a few hundred ms for a stalled one, and end the push
            # before mtlsd's write towards the client is really blocked.
            if backlog and not becomes(lambda: queued(*proxy_end)[1] < backlog, quiet):
                break
        stalled.set()
        conn.end_at = time.monotonic()
        conn.shutdown_write()
        ended.set()
        release.wait(120)
    return handler


class BlackHole:
    """A TCP server that accepts and never answers (an OCSP responder that hangs)."""

    def __init__(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(128)
        self._lsock.settimeout(0.05)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._lsock.getsockname()[1]}/ocsp"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._lsock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self.conns.append(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._lsock.close()
        close_all(self.conns)


def wait_stalled(progress: Callable[[], int], quiet: float, timeout: float, what: str) -> int:
    """Sample `progress()` until it has not changed for `quiet` seconds; return its value.
    A transfer that keeps moving for `timeout` seconds fails the test."""
    deadline = time.monotonic() + timeout
    value, since = progress(), time.monotonic()
    while True:
        time.sleep(0.05)
        now, current = time.monotonic(), progress()
        if current != value:
            value, since = current, now
        elif now - since >= quiet:
            return value
        if now >= deadline:
            raise AssertionError(f"{what} still moving after {timeout}s ({value} bytes)")


def flush_pending_record(sock: ssl.SSLSocket, make_room: Callable[[], None],
                         timeout: float = 30.0) -> None:
    """After push_until_stalled: one more send with the same block, so OpenSSL writes out the
    record a would-block left half-written (in partial-write mode it returns once that record
    is out), and a FIN after it cannot cut a record in two. `make_room()` lets some bytes
    through (the stalled peer reads a little) whenever the socket takes nothing."""
    block = b"\x5a" * (256 * 1024)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([], [sock], [], 0.1)[1]:
            try:
                if sock.send(block):
                    return
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        make_room()
    raise AssertionError("the pending record was never written")


def push_until_stalled(sock: ssl.SSLSocket, limit: int, quiet: float = 1.0,
                       timeout: float = 30.0) -> int:
    """Send up to `limit` bytes on a TLS socket without ever reading, until the peer stops
    taking them for `quiet` seconds. Returns how many bytes were sent; fails if all of
    `limit` went through (something buffered it all) or the push never stalls."""
    block = b"\x5a" * (256 * 1024)  # the same block each time: SSL_write may be retried
    sock.setblocking(False)
    sent, last = 0, time.monotonic()
    deadline = last + timeout
    while sent < limit:
        now = time.monotonic()
        if now - last >= quiet:
            return sent
        assert now < deadline, f"the push never stalled: {sent} bytes in {timeout}s"
        selectors_ready = select.select([], [sock], [], 0.1)[1]
        if not selectors_ready:
            continue
        try:
            n = sock.send(block[:min(len(block), limit - sent)])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            continue
        if n:
            sent += n
            last = time.monotonic()
    raise AssertionError(f"all {limit} bytes went through a peer that does not read")
