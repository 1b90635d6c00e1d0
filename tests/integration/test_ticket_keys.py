"""TLS 1.3 session tickets (issue 13): one key ring for the process, so a ticket resumes on every
worker and after a reload — unless the reload changed the trust the session was verified under
(then a full handshake verifies the client again).

Python's ssl client offers the saved session; `session_reused` says whether the server took it.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess

from mtlsd_harness import client_context, daemon_config, fmt_addr, server_listener, write_config

RELOADED = "reloaded"


def _config(pki, upstream: str, **listener) -> dict:
    return daemon_config([server_listener(pki, upstream, **listener)], workers=2,
                         reload={"watch": False})


def _connect(daemon, ctx: ssl.SSLContext, session=None) -> tuple[bool, ssl.SSLSession]:
    """One round trip; whether the offered session resumed, and the session to offer next."""
    raw = socket.create_connection(daemon.addr(), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(b"ping\n")
        assert tls.recv(100) == b"ping\n"  # the ticket arrives with the first read
        return tls.session_reused, tls.session


def _reload(daemon, config: dict) -> None:
    seen = len([l for l in daemon.logs() if l.get("msg") == RELOADED])
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == RELOADED and
                        len([x for x in daemon.logs() if x.get("msg") == RELOADED]) > seen)


def test_a_ticket_resumes_on_every_worker(start_mtlsd, make_upstream, pki):
    daemon = start_mtlsd(_config(pki, make_upstream().address))
    ctx = client_context(pki)
    reused, session = _connect(daemon, ctx)
    assert not reused
    # Each connection lands on a worker by its port's hash: twelve resumptions from one ticket
    # reach both workers with near certainty (1 in 2048 that they all pick the issuing one).
    for _ in range(12):
        reused, _ = _connect(daemon, ctx, session)
        assert reused


def test_a_ticket_survives_a_reload(start_mtlsd, make_upstream, pki):
    upstream = make_upstream().address
    daemon = start_mtlsd(_config(pki, upstream))
    ctx = client_context(pki)
    _, session = _connect(daemon, ctx)
    # The same trust, another setting: new SSL_CTXs, the same ticket keys and session context.
    _reload(daemon, _config(pki, upstream, timeouts={"idle": "45s"}))
    reused, _ = _connect(daemon, ctx, session)
    assert reused


def test_a_reload_that_changes_trust_forces_a_full_handshake(start_mtlsd, make_upstream, pki):
    upstream = make_upstream().address
    daemon = start_mtlsd(_config(pki, upstream))
    ctx = client_context(pki)
    _, session = _connect(daemon, ctx)
    _reload(daemon, _config(pki, upstream, client_auth={
        "mode": "require", "ca": [pki.path("ca.crt"), pki.path("other-ca.crt")]}))
    reused, fresh = _connect(daemon, ctx, session)
    assert not reused  # verified again under the new trust store...
    reused, _ = _connect(daemon, ctx, fresh)
    assert reused  # ...and the new session resumes


def test_a_ticket_lives_no_longer_than_its_key_decrypts(start_mtlsd, make_upstream, pki):
    """The lifetime a ticket announces is one key period (3600 s): a key decrypts for two
    periods from its first ticket, so a ticket made late in its period has one left (OpenSSL's
    default hint, 7200 s, had clients offer tickets for an hour after no key could decrypt them).
    openssl s_client prints each ticket as it arrives."""
    daemon = start_mtlsd(_config(pki, make_upstream().address))
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", fmt_addr(daemon.addr()), "-servername", "localhost",
         "-CAfile", pki.path("ca.crt"), "-cert", pki.path("client.crt"),
         "-key", pki.path("client.key")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    hint = b""
    try:
        client.stdin.write(b"ping\n")  # the ticket comes with the server's first flight
        client.stdin.flush()
        for line in client.stdout:
            if b"ticket lifetime hint" in line:
                hint = line.strip()
                break
    finally:
        client.kill()
        client.wait(timeout=10)
    assert hint == b"TLS session ticket lifetime hint: 3600 (seconds)", hint
