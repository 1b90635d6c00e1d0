"""Server mode: who gets in. Admitted clients with three real client stacks,
and every certificate-based refusal with its contract reason."""

from __future__ import annotations

import pytest

from mtlsd_harness import (client_context, curl, echo_roundtrip, http_ok, reply_after,
                           s_client, tls_exchange)
from refusal import assert_admitted, assert_refused

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"


def test_python_client_round_trip(serve, pki):
    daemon, up = serve()
    payload = b"hello through mtlsd\n"
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"), payload)
    line = assert_admitted(daemon, ex, payload, CLIENT_ID)
    assert line["tls_version"] == "TLSv1.3" == ex.version
    assert line["cipher"]
    assert line["rx_bytes"] == len(payload) and line["tx_bytes"] == len(payload)
    assert line["reason"] == ""
    assert bytes(up.connections[0].received) == payload


def test_tls12_client_round_trip(serve, pki):
    daemon, _ = serve()
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client", max_version="1.2"))
    line = assert_admitted(daemon, ex, b"ping\n", CLIENT_ID)
    assert ex.version == "TLSv1.2" == line["tls_version"]
    # ECDHE + AEAD only.
    assert ex.cipher.startswith("ECDHE-") and ("GCM" in ex.cipher or "CHACHA20" in ex.cipher)


def test_curl_round_trip(serve, pki):
    daemon, up = serve(http_ok(b"hello from upstream"))
    proc = curl(daemon.addr(), pki, "client")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hello from upstream"
    assert bytes(up.connections[0].received).startswith(b"GET / HTTP/1.1\r\n")
    line = daemon.wait_for_access(result="accepted")
    assert line["identity"] == CLIENT_ID


def test_curl_without_client_cert_is_refused(serve, pki):
    daemon, up = serve(http_ok())
    proc = curl(daemon.addr(), pki, cert=None)
    assert proc.returncode != 0 and proc.stdout == b""
    line = daemon.wait_for_access()
    assert line["reason"] == "no_client_cert" and line["result"] == "rejected"
    up.assert_untouched()


def test_s_client_round_trip(serve, pki):
    daemon, up = serve(reply_after(b"\n", b"pong\n"))
    proc = s_client(daemon.addr(), pki, "client", data=b"ping\n")
    assert proc.stdout == b"pong\n", proc.stderr
    assert bytes(up.connections[0].received) == b"ping\n"
    assert daemon.wait_for_access(result="accepted")["identity"] == CLIENT_ID


# (client cert or None, certfile override, contract reason)
REFUSALS = [
    (None, None, "no_client_cert"),
    ("client-other", None, "unknown_ca"),
    ("client-expired", None, "expired"),
    ("client-notyet", None, "not_yet_valid"),
    ("client-serverauth", None, "bad_key_usage"),
    # An intermediate-issued leaf sent without its intermediate cannot chain.
    ("client-int", "client-int.crt", "unknown_ca"),
]


@pytest.mark.parametrize("version", ["1.3", "1.2"])
@pytest.mark.parametrize("cert,certfile,reason", REFUSALS, ids=[r[2] + "-" + str(r[0])
                                                                 for r in REFUSALS])
def test_refused_client_certificates(serve, pki, cert, certfile, reason, version):
    daemon, up = serve()
    ctx = client_context(pki, cert, certfile=certfile, max_version=version)
    ex = tls_exchange(daemon.addr(), ctx, b"must not arrive\n")
    assert_refused(daemon, up, ex, reason)


def test_client_sends_intermediate(serve, pki):
    daemon, _ = serve()
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    ex = echo_roundtrip(daemon.addr(), ctx)
    assert_admitted(daemon, ex, b"ping\n", "spiffe://example.org/ns/default/sa/client-int")


def test_client_cert_without_eku_is_admitted(serve, pki):
    # EKU is enforced only when the extension is present.
    daemon, _ = serve()
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client-noeku"))
    assert_admitted(daemon, ex, b"ping\n", "spiffe://example.org/ns/default/sa/client-noeku")


def test_trust_store_from_several_bundles(serve, pki):
    daemon, _ = serve(client_auth={"ca": [pki.path("ca.crt"), pki.path("other-ca.crt")]})
    for cert in ("client", "client-other"):
        ex = echo_roundtrip(daemon.addr(), client_context(pki, cert))
        assert_admitted(daemon, ex, b"ping\n")


def test_verify_depth_zero_refuses_intermediate_chain(serve, pki):
    daemon, up = serve(client_auth={"verify_depth": 0})
    direct = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, direct, b"ping\n", CLIENT_ID)
    up_conns_before = up.connection_count()
    ctx = client_context(pki, "client-int", certfile="client-int-chain.crt")
    ex = tls_exchange(daemon.addr(), ctx, b"must not arrive\n")
    assert ex.data == b"" and ex.alert, ex.error
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "chain_too_long" and line["result"] == "rejected"
    assert up.connection_count() == up_conns_before


def test_min_version_13_refuses_tls12_client(serve, pki):
    daemon, up = serve(tls={"min_version": "1.3"})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client", max_version="1.2"))
    assert not ex.handshake_ok and ex.alert, ex.error
    line = daemon.wait_for_access(client=ex.local)
    assert line["reason"] == "protocol_error" and line["result"] != "accepted"
    up.assert_untouched()


def test_optional_client_auth_admits_client_without_cert(serve, pki):
    daemon, _ = serve(client_auth={"mode": "optional"})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, None))
    assert_admitted(daemon, ex, b"ping\n", identity="")
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, ex, b"ping\n", identity=CLIENT_ID)


def test_optional_client_auth_still_refuses_a_bad_cert(serve, pki):
    daemon, up = serve(client_auth={"mode": "optional"})
    ex = tls_exchange(daemon.addr(), client_context(pki, "client-expired"))
    assert_refused(daemon, up, ex, "expired")


def test_optional_client_auth_with_an_allow_list_refuses_a_client_without_cert(serve, pki):
    # No allow entry can match a client that presents nothing: refused, as under require.
    daemon, up = serve(client_auth={"mode": "optional",
                                    "allow": {"spiffe_ids": [CLIENT_ID]}})
    ex = tls_exchange(daemon.addr(), client_context(pki, None))
    assert_refused(daemon, up, ex, "no_client_cert")
    assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                               reason="no_client_cert") == 1
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert_admitted(daemon, ex, b"ping\n", identity=CLIENT_ID)


def test_client_auth_none_admits_client_without_cert(serve, pki):
    daemon, _ = serve(client_auth={"mode": "none", "ca": None})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, None))
    assert_admitted(daemon, ex, b"ping\n", identity="")
