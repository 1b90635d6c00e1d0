"""SIGTERM/SIGINT: stop accepting, drain open connections up to
shutdown.drain_timeout, then exit 0."""

from __future__ import annotations

import signal
import socket
import ssl
import time

import pytest

from faults import client_hello, wait_active
from helpers import wait_until
from mtlsd_harness import client_context, connect, open_tls


def recv_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait_until_refusing(addr, timeout: float = 15.0) -> None:
    """Bounded poll until new TCP connections are refused (several in a row,
    since each worker has its own SO_REUSEPORT acceptor). A connect that times out is not a
    refusal: a listening socket that no longer accepts but is not closed yet (a slow,
    sanitized daemon between the signal and the close) fills its backlog with these probes,
    and the kernel then drops SYNs (seen in CI under TSan)."""
    deadline = time.monotonic() + timeout
    refused_in_a_row = 0
    while time.monotonic() < deadline:
        try:
            connect(addr, timeout=1).close()
            refused_in_a_row = 0
        except TimeoutError:
            refused_in_a_row = 0
            continue
        except (ConnectionRefusedError, ConnectionResetError):
            # A reset happens when the listening socket closes mid-connect.
            refused_in_a_row += 1
            if refused_in_a_row >= 8:
                return
            continue
        time.sleep(0.02)
    raise AssertionError(f"mtlsd still accepts new connections {timeout}s after the signal")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_daemon_exits_zero(serve, sig):
    daemon, _ = serve()
    daemon.send_signal(sig)
    assert daemon.wait_exit(5) == 0


def test_sigterm_drains_open_connection(serve, pki):
    daemon, _ = serve()
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    local = sock.getsockname()
    sock.sendall(b"before\n")
    assert recv_exact(sock, 7) == b"before\n"

    daemon.send_signal(signal.SIGTERM)
    wait_until_refusing(daemon.addr())

    # The connection that was open when the signal came still works...
    sock.sendall(b"after the signal\n")
    assert recv_exact(sock, 17) == b"after the signal\n"
    assert daemon.running(), "mtlsd exited with a connection still open"
    # ...and once it ends, mtlsd exits cleanly.
    sock.close()
    assert daemon.wait_exit(5) == 0
    line = daemon.wait_for_access(client=f"{local[0]}:{local[1]}")
    assert line["result"] == "accepted" and line["rx_bytes"] == 7 + 17


def test_drain_timeout_cuts_stuck_connection(serve, pki):
    daemon, _ = serve(top={"shutdown": {"drain_timeout": "1s"}})
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    sock.sendall(b"stuck\n")
    assert recv_exact(sock, 6) == b"stuck\n"

    start = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait_exit(8)
    elapsed = time.monotonic() - start
    assert code == 0
    assert 0.8 <= elapsed < 5.0, f"exited after {elapsed:.2f}s with drain_timeout 1s"
    # Our connection was cut (a timeout here would propagate and fail).
    sock.settimeout(2)
    try:
        assert sock.recv(64) == b""
    except (ConnectionResetError, ssl.SSLError):
        pass
    sock.close()


def test_a_connection_the_drain_timeout_cuts_before_admission_is_refused_not_an_error(serve,
                                                                                      pki):
    """Review: a connection still connecting to its upstream (or waiting on a revocation answer)
    when the drain timeout cut it was logged result=error, counted as an internal failure. It
    was refused for the shutdown: result=rejected, reason shutting_down, termination drain."""
    backlog = socket.socket()
    backlog.bind(("127.0.0.1", 0))
    backlog.listen(0)
    fillers = []
    try:
        for _ in range(2):  # the accept queue full: the kernel drops further SYNs, a connect hangs
            f = socket.socket()
            f.settimeout(0.5)
            try:
                f.connect(backlog.getsockname())
            except TimeoutError:
                pass
            fillers.append(f)
        daemon, _ = serve(upstream="127.0.0.1:%d" % backlog.getsockname()[1],
                          top={"shutdown": {"drain_timeout": "1s"}}, timeouts={"connect": "20s"})
        sock = open_tls(daemon.addr(), client_context(pki, "client"))
        sock.sendall(b"waiting\n")
        wait_until(lambda: daemon.scrape().total("mtlsd_tls_handshakes_total") >= 1,
                   what="mtlsd's side of the handshake")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(8) == 0
        sock.close()
        [line] = daemon.access_logs()
        assert (line["result"], line["reason"], line["termination"]) == \
            ("rejected", "shutting_down", "drain"), line
        assert "before it was admitted" in line["detail"], line
    finally:
        for f in fillers:
            f.close()
        backlog.close()


def test_drain_closes_connections_still_in_their_handshake_at_once(serve, pki):
    """Shutdown does not wait for clients that have not finished their TLS handshake: one that
    has not sent its ClientHello (silent, or half of it) is closed at once, one in mid-handshake
    (here: stuck after the server's flight) within the 1 s grace it gets; reason
    shutting_down, termination drain. Connections past their handshake drain as before."""
    daemon, _ = serve(top={"shutdown": {"drain_timeout": "30s"}},
                      timeouts={"handshake": "30s"})
    established = open_tls(daemon.addr(), client_context(pki, "client"))
    established.sendall(b"open\n")
    assert recv_exact(established, 5) == b"open\n"

    hello = client_hello(client_context(pki, "client"))
    silent = connect(daemon.addr())                  # nothing sent: no SSL object yet
    half = connect(daemon.addr())
    half.sendall(hello[: len(hello) // 2])           # half a ClientHello: no SSL object either
    mid = connect(daemon.addr())
    mid.sendall(hello)                               # a whole one: the server answers, then
    mid.settimeout(5)                                # waits for the client's certificate
    assert mid.recv(5)[:1] == b"\x16", "no ServerHello"
    # connect() returns once the kernel has the connection; mtlsd may not have accepted it yet
    # (each worker has its own acceptor), and one still in a listener's queue at SIGTERM is
    # reset by the kernel, never accepted, never logged.
    wait_active(daemon, lambda n: n >= 4, 5, "all four connections accepted")
    pending = {"silent": silent, "half": half, "mid": mid}
    ports = {name: sock.getsockname()[1] for name, sock in pending.items()}

    start = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    closed_after = {}
    for name, sock in pending.items():
        sock.settimeout(5)
        try:
            while sock.recv(4096):  # the rest of the server's flight, then the close
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"{name}: still open 5s after SIGTERM")
        closed_after[name] = time.monotonic() - start
        sock.close()
    assert closed_after["mid"] < 4, closed_after

    details = {"silent": "shutdown began before the client's ClientHello",
               "half": "shutdown began before the client's ClientHello",
               "mid": "shutdown began during the TLS handshake, which did not finish within 1s"}
    for name, port in ports.items():
        line = daemon.wait_for_access(client=f"127.0.0.1:{port}")
        assert (line["result"], line["reason"], line["termination"]) == \
            ("rejected", "shutting_down", "drain"), (name, line)
        assert line["detail"] == details[name], (name, line)
    m = daemon.scrape()
    assert m.get("mtlsd_handshake_failures_total", listener="inbound",
                 reason="shutting_down") == 3

    # The established connection still works, and its end lets mtlsd exit.
    assert daemon.running()
    established.sendall(b"still\n")
    assert recv_exact(established, 6) == b"still\n"
    established.close()
    assert daemon.wait_exit(5) == 0


def test_a_handshake_finished_during_the_drain_grace_is_served(serve, pki):
    """A TLS 1.3 client counts its handshake done once it has the server's flight, and sends
    its Finished with its first request. If shutdown begins in that round trip, the request is
    still served (the handshake gets a grace, not a close)."""
    daemon, _ = serve(top={"shutdown": {"drain_timeout": "30s"}},
                      timeouts={"handshake": "30s"})
    sock = connect(daemon.addr())
    sock.settimeout(5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki, "client").wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(outgoing.read())                    # the ClientHello
    while True:                                      # the server's flight
        data = sock.recv(65536)
        assert data, "closed during the handshake"
        incoming.write(data)
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue

    daemon.send_signal(signal.SIGTERM)
    daemon.wait_for_log(lambda line: line.get("msg") == "draining")
    tls.write(b"late request\n")                      # certificate, Finished and the request
    sock.sendall(outgoing.read())
    answer = b""
    while len(answer) < 13:
        data = sock.recv(65536)
        if not data:
            break
        incoming.write(data)
        try:
            answer += tls.read(65536)
        except ssl.SSLWantReadError:
            continue
    assert answer == b"late request\n"
    assert daemon.running(), "mtlsd exited with the connection open"
    sock.close()
    assert daemon.wait_exit(5) == 0
    line = daemon.wait_for_access(result="accepted")
    assert line["rx_bytes"] == 13 and line["termination"] == "client_close", line
