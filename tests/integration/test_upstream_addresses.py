"""An upstream host name with several addresses is connected to Happy Eyeballs style (RFC 8305):
an address that neither connects nor fails within 250 ms does not hold up the next one, a
refusal moves on at once, at most 4 attempts are in flight, the first to connect wins, and the
whole race stays bounded by `timeouts.connect`, whose refusal names every attempt still in
flight. An HTTP/2 client's further upstream connections (one per concurrent stream in front of
an HTTP/1.1 upstream) are bounded by `timeouts.connect` too.

An address that never answers, without root: a listener with backlog 0 that never accepts, its
accept queue filled by a connect of ours; the kernel then drops every further SYN, so a connect
there neither completes nor fails. Every address of one name shares one port (the name has one
port), on the loopback addresses 127.0.0.1-127.0.0.9."""

from __future__ import annotations

import select
import socket
import threading
import time

import h2.events
import pytest

from clients import tls_exchange
from h2_client import H2Client, status_of
from helpers import wait_request_line, wait_until
from http_upstream import Reader, read_request, response
from mtlsd_harness import client_context, daemon_config, echo_roundtrip, server_listener
from test_dns import dns  # noqa: F401  (dns: fixture)
from upstream import UpstreamConn

NAME = "up.eyeballs-test"
GOOD = "127.0.0.1"                 # a real upstream
SILENT, SILENT2 = "127.0.0.2", "127.0.0.4"   # listeners whose SYNs are dropped
REFUSING = "127.0.0.3"             # bound, not listening: a connect is refused
HANG_PROBE = 0.3                   # a connect unanswered this long counts as hanging
CLIENT_WAIT = 8.0                  # how long an HTTP/2 client waits for a stream to end



def fill_accept_queue(listener: socket.socket, keep: list[socket.socket]) -> None:
    """Connects to `listener` (listening with backlog 0, never accepting) until its accept queue
    is full: the connects that complete stay open in `keep`. Returns once one more connect
    demonstrably hangs (no answer within HANG_PROBE); skips the test when the kernel answers
    every connect (then no address of ours can be silent)."""
    address = listener.getsockname()
    for _ in range(4):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        probe.connect_ex(address)
        _, writable, _ = select.select([], [probe], [], HANG_PROBE)
        if not writable:
            probe.close()   # hangs: the kernel drops SYNs to this listener from now on
            return
        error = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            probe.close()
            pytest.skip(f"a connect to the full listener {address} failed (errno {error}) "
                        "instead of hanging: this kernel cannot make a silent address")
        keep.append(probe)
    pytest.skip(f"the kernel completed every connect to {address} (backlog 0, never "
                "accepted): it does not drop SYNs at a full accept queue here")


class SamePort:
    """One port P reserved on several loopback addresses: a socket bound (SO_REUSEADDR, not
    listening) on each, so a connect there is refused and nothing else takes it. silent(host)
    makes host:P an address that never answers; an Upstream may still listen on GOOD:P."""

    def __init__(self, hosts: tuple[str, ...]):
        self.port = 0
        self.socks: dict[str, socket.socket] = {}
        self.fillers: list[socket.socket] = []
        for _ in range(50):
            try:
                self._reserve(hosts)
                return
            except OSError:
                self.close()
        pytest.skip(f"no port free on every one of {hosts}")

    def _reserve(self, hosts: tuple[str, ...]) -> None:
        for host in hosts:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.socks[host] = s
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, self.port))
            self.port = s.getsockname()[1]

    def addr(self, host: str) -> str:
        return f"{host}:{self.port}"

    def silent(self, host: str) -> None:
        """host:P accepts no connection and answers no SYN from now on (verified)."""
        listener = self.socks[host]
        listener.listen(0)
        fill_accept_queue(listener, self.fillers)

    def refusing(self, host: str) -> None:
        """Verifies that a connect to host:P is refused at once (skips otherwise)."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect((host, self.port))
        except ConnectionRefusedError:
            return
        except OSError as e:
            pytest.skip(f"a connect to {self.addr(host)} failed with {e!r}, not a refusal")
        finally:
            probe.close()
        pytest.skip(f"a connect to {self.addr(host)} was accepted: something listens there")

    def close(self) -> None:
        for s in [*self.fillers, *self.socks.values()]:
            s.close()
        self.fillers, self.socks, self.port = [], {}, 0


@pytest.fixture
def same_port():
    """same_port(*hosts) -> SamePort, closed at teardown."""
    made: list[SamePort] = []

    def make(*hosts: str) -> SamePort:
        ports = SamePort(hosts)
        made.append(ports)
        return ports
    yield make
    for ports in made:
        ports.close()


def by_name(pki, dns, ports: SamePort, answers: list[str], connect: str, **overrides) -> dict:
    """A daemon config: one server listener whose upstream is NAME:P, NAME resolving (by a DNS
    server of ours) to `answers` in that order."""
    server = dns({NAME: answers})
    return daemon_config([server_listener(pki, f"{NAME}:{ports.port}",
                                          timeouts={"connect": connect}, **overrides)],
                         dns={"servers": [server.address]})


def outcome(line: dict) -> str:
    """An access line's verdict in one short string (pytest shortens a whole line's repr)."""
    keys = ("result", "reason", "upstream", "upstream_connect_ms", "duration_ms", "detail")
    return " ".join(f"{k}={line.get(k)!r}" for k in keys)


def admitted_line(daemon, ex) -> dict:
    """The access line of an echo exchange that must have gone through, checked line first: a
    refusal shows its reason and detail."""
    assert ex.local, f"client never connected: {ex.error!r}"
    line = daemon.wait_for_access(client=ex.local)
    assert line.get("result") == "accepted", outcome(line)
    assert ex.error is None, f"client failed: {ex.error!r}"
    assert ex.data == b"ping\n", ex.data
    return line


# --- Happy Eyeballs ---------------------------------------------------------------------------

def test_a_silent_first_address_does_not_hold_up_the_next(start_mtlsd, make_upstream, pki, dns,
                                                           same_port):
    """NAME -> [silent, good]: the good address is tried 250 ms into the silent one's attempt,
    not after the whole connect timeout (which used to refuse the client)."""
    ports = same_port(SILENT, GOOD)
    ports.silent(SILENT)
    make_upstream(port=ports.port)            # GOOD:P
    daemon = start_mtlsd(by_name(pki, dns, ports, [SILENT, GOOD], "3s"))
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    line = admitted_line(daemon, ex)
    assert line["upstream"] == ports.addr(GOOD), outcome(line)
    # At least the attempt delay: the silent address was tried first (a resolver that put the
    # good one first would pass vacuously); far below the 3 s timeout.
    assert 200 <= line["upstream_connect_ms"] < 2000, outcome(line)


def test_a_refusing_first_address_moves_on_to_the_next(start_mtlsd, make_upstream, pki, dns,
                                                        same_port):
    """NAME -> [refusing, good]: the refusal starts the next attempt (at once, though only a
    loose bound is asserted); as before Happy Eyeballs, which tried addresses in turn."""
    ports = same_port(REFUSING, GOOD)
    ports.refusing(REFUSING)
    make_upstream(port=ports.port)
    daemon = start_mtlsd(by_name(pki, dns, ports, [REFUSING, GOOD], "3s"))
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    line = admitted_line(daemon, ex)
    assert line["upstream"] == ports.addr(GOOD), outcome(line)
    assert line["upstream_connect_ms"] < 2000, outcome(line)


def test_a_refusal_while_a_silent_attempt_runs_moves_on_to_the_next(
        start_mtlsd, make_upstream, pki, dns, same_port):
    """NAME -> [silent, refusing, good]: the refused second attempt (started at 250 ms) neither
    ends the race nor leaves it waiting for the silent one: the third address wins."""
    ports = same_port(SILENT, REFUSING, GOOD)
    ports.silent(SILENT)
    ports.refusing(REFUSING)
    make_upstream(port=ports.port)
    daemon = start_mtlsd(by_name(pki, dns, ports, [SILENT, REFUSING, GOOD], "3s"))
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    line = admitted_line(daemon, ex)
    assert line["upstream"] == ports.addr(GOOD), outcome(line)
    assert 200 <= line["upstream_connect_ms"] < 2000, outcome(line)


def test_silent_addresses_are_refused_at_the_connect_timeout_naming_each_attempt(
        start_mtlsd, pki, dns, same_port):
    """NAME -> [silent, silent]: both attempts run until timeouts.connect ends them, and the
    refusal names both."""
    ports = same_port(SILENT, SILENT2)
    ports.silent(SILENT)
    ports.silent(SILENT2)
    daemon = start_mtlsd(by_name(pki, dns, ports, [SILENT, SILENT2], "1s"))
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    assert ex.local, f"client never connected: {ex.error!r}"
    assert ex.data == b"", ex.data
    assert not isinstance(ex.error, TimeoutError), "refusal was not prompt: client timed out"
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "rejected" and line["reason"] == "upstream_unavailable", \
        outcome(line)
    detail = line["detail"]
    assert f"connect to {ports.addr(SILENT)} and {ports.addr(SILENT2)} timed out after 1s" \
        in detail, outcome(line)
    assert f"(connect to {NAME}:{ports.port})" in detail, outcome(line)
    assert 900 <= line["duration_ms"] < 5000, outcome(line)
    assert daemon.scrape().total("mtlsd_upstream_connect_failures_total",
                                 listener="inbound") == 1


def test_at_most_four_attempts_are_in_flight(start_mtlsd, pki, dns, same_port):
    """NAME -> five silent addresses: the fifth is never started while four attempts hang (a
    descriptor per 250 ms otherwise); the refusal names the four, in the resolver's order."""
    hosts = ("127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")
    ports = same_port(*hosts)
    for host in hosts:
        ports.silent(host)
    # 2 s: the fourth attempt starts at 750 ms, well inside it even on a slow machine.
    daemon = start_mtlsd(by_name(pki, dns, ports, list(hosts), "2s"))
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"))
    assert ex.local, f"client never connected: {ex.error!r}"
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "upstream_unavailable", outcome(line)
    four = " and ".join(ports.addr(h) for h in hosts[:4])
    assert f"connect to {four} timed out after 2s" in line["detail"], outcome(line)
    assert ports.addr(hosts[4]) not in line["detail"], outcome(line)


# --- an HTTP/2 client's further upstream connections ------------------------------------------

class OneConnectionUpstream:
    """HTTP/1.1 on 127.0.0.1:P, listen backlog 0: accepts exactly one connection and answers
    every request on it (keep-alive), one for "/hold" only once `release` is set; never accepts
    again. fill() then makes every further connect hang."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.held = threading.Event()       # the "/hold" request arrived
        self.release = threading.Event()
        self.targets: list[str] = []        # every request, in order
        self.fillers: list[socket.socket] = []
        self.conn: UpstreamConn | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.sock.accept()
        except OSError:
            return
        self.conn = UpstreamConn(sock)
        reader = Reader(self.conn)
        try:
            while (req := read_request(reader)) is not None:
                self.targets.append(req.target)
                if req.target == "/hold":
                    self.held.set()
                    self.release.wait(30)
                self.conn.sendall(response(200, f"reply to {req.target}".encode()))
        except OSError:
            pass

    def fill(self) -> None:
        fill_accept_queue(self.sock, self.fillers)

    def syn_sent(self) -> int:
        """Connects to us still in SYN_SENT (mtlsd's: ours that hang are closed at once)."""
        rem = f"0100007F:{self.port:04X}"
        with open("/proc/net/tcp") as f:
            next(f)
            return sum(1 for row in f if row.split()[2] == rem and row.split()[3] == "02")

    def close(self) -> None:
        self.release.set()
        for s in [*self.fillers, self.sock]:
            s.close()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(5)


@pytest.fixture
def one_connection_upstream():
    up = OneConnectionUpstream()
    yield up
    up.close()


def ended(client: H2Client, sid: int, timeout: float):
    """Waits for the stream's end (END_STREAM or RST_STREAM); its events."""
    client.wait_for(lambda ev: getattr(ev, "stream_id", None) == sid and isinstance(
        ev, (h2.events.StreamEnded, h2.events.StreamReset)), timeout)
    return [ev for ev in client.events if getattr(ev, "stream_id", None) == sid]


def h2_daemon(start_mtlsd, pki, up: OneConnectionUpstream, connect: str):
    return start_mtlsd(daemon_config([server_listener(
        pki, up.address, http={"protocols": ["h2"]}, timeouts={"connect": connect})]))


def hold_the_only_connection(client: H2Client, up: OneConnectionUpstream) -> int:
    """Sends /hold, which takes the one connection the upstream accepts; every further connect
    hangs from then on. Returns its stream id."""
    hold = client.request("/hold")
    assert up.held.wait(10), "the upstream never saw /hold"
    up.fill()
    return hold


def test_further_upstream_connects_of_an_http2_client_are_bounded_by_the_connect_timeout(
        start_mtlsd, pki, one_connection_upstream):
    """Two streams behind one held on the only upstream connection each open one more, which
    hangs: timeouts.connect (1s) ends them with a 502 saying why, not the kernel's ~2 min of
    SYN retries; the client connection goes on serving."""
    up = one_connection_upstream
    daemon = h2_daemon(start_mtlsd, pki, up, "1s")
    client = H2Client(daemon, pki)
    try:
        hold = hold_the_only_connection(client, up)
        start = time.monotonic()
        sids = [client.request("/two"), client.request("/three")]
        for sid in sids:
            mine = ended(client, sid, CLIENT_WAIT)
            elapsed = time.monotonic() - start
            assert 0.8 <= elapsed < 5.0, f"stream {sid} ended after {elapsed:.2f}s: {mine}"
            # As for any upstream connect failure before a response began: a 502.
            assert status_of(mine) == 502, mine
        up.release.set()
        assert client.response(hold, CLIENT_WAIT) == (200, b"reply to /hold")
        # The held connection is free again: the client connection still works.
        assert client.response(client.request("/four"), CLIENT_WAIT) == (200, b"reply to /four")
    finally:
        client.close()
    for path in ("/two", "/three"):
        line = wait_request_line(daemon, path=path)
        assert line["status"] == 502, line
        assert f"connect to {up.address} timed out after 1s" in line["detail"], line
    assert up.targets == ["/hold", "/four"]


def test_a_stream_reset_while_its_upstream_connect_hangs_ends_that_connect(
        start_mtlsd, pki, one_connection_upstream):
    """The client resets a stream whose new upstream connection hangs: the attempt is closed at
    once (its SYN_SENT socket is gone), not left to timeouts.connect (30s), and it is no failed
    connect (review: a client resetting such streams drove mtlsd_upstream_connect_failures_total
    and its alert at will)."""
    up = one_connection_upstream
    daemon = h2_daemon(start_mtlsd, pki, up, "30s")
    client = H2Client(daemon, pki)
    try:
        hold = hold_the_only_connection(client, up)
        sid = client.request("/two")
        wait_until(lambda: up.syn_sent() == 1, what="mtlsd's connect for /two (SYN_SENT)")
        client.conn.reset_stream(sid)
        client.flush()
        wait_until(lambda: up.syn_sent() == 0, timeout=5.0,
                 what="the reset stream's connect attempt to end")
        up.release.set()
        assert client.response(hold, CLIENT_WAIT) == (200, b"reply to /hold")
        # The reset stream gave its place back: the next one is served on the held connection.
        assert client.response(client.request("/three"), CLIENT_WAIT) == (200, b"reply to /three")
    finally:
        client.close()
    assert up.targets == ["/hold", "/three"]
    assert daemon.scrape().get("mtlsd_upstream_connect_failures_total", listener="inbound") == 0
