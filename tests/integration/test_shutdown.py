"""SIGTERM/SIGINT: stop accepting, drain open connections up to
shutdown.drain_timeout, then exit 0."""

from __future__ import annotations

import signal
import ssl
import time

import pytest

from mtlsd_harness import client_context, connect, open_tls


def recv_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait_until_refusing(addr, timeout: float = 5.0) -> None:
    """Bounded poll until new TCP connections are refused (several in a row,
    since each worker has its own SO_REUSEPORT acceptor)."""
    deadline = time.monotonic() + timeout
    refused_in_a_row = 0
    while time.monotonic() < deadline:
        try:
            connect(addr, timeout=1).close()
            refused_in_a_row = 0
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
