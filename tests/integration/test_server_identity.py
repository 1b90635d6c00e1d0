"""Server mode: how mtlsd presents itself — chains, encrypted keys, PKCS#12 —
and where it listens (IPv6)."""

from __future__ import annotations

import socket

import pytest

from mtlsd_harness import client_context, echo_roundtrip
from refusal import assert_admitted

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"


def test_server_chain_via_intermediate(serve, pki):
    # The client trusts only the root, so the handshake works only if mtlsd
    # sends the intermediate from the cert file.
    daemon, _ = serve(tls={"cert": pki.path("server-int-fullchain.crt"),
                           "key": pki.path("server-int.key")})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, ex, b"ping\n", CLIENT_ID)


def test_encrypted_server_key(serve, pki):
    daemon, _ = serve(tls={"key": pki.path("server-enc.key"),
                           "key_password_file": pki.path("server-enc.pass")})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, ex, b"ping\n", CLIENT_ID)


@pytest.mark.parametrize("bundle", ["server.p12", "server-int.p12"])
def test_pkcs12_server_identity(serve, pki, bundle):
    # server-int.p12 also proves the bundle's CA certs are sent as the chain.
    daemon, _ = serve(tls={"cert": None, "key": None, "pkcs12": pki.path(bundle),
                           "pkcs12_password_file": pki.path(bundle + ".pass")})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, ex, b"ping\n", CLIENT_ID)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this host")
def test_ipv6_listen(serve, pki):
    daemon, _ = serve(listen="[::1]:0")
    assert daemon.listeners["inbound"].startswith("[::1]:")
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.local.startswith("[::1]:")
    assert_admitted(daemon, ex, b"ping\n", CLIENT_ID)
