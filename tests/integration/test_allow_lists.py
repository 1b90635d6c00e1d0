"""client_auth.allow: each kind of rule, hit and miss.

One daemon serves one listener per rule (each with its own upstream), which
keeps this table fast: a miss must be refused with `not_authorized` and a TLS
alert (authorization runs inside the handshake), and its upstream stays empty.
"""

from __future__ import annotations

import pytest

from mtlsd_harness import (Mtlsd, Upstream, check_sanitizer_reports, client_context, daemon_config,
                           echo_roundtrip, server_listener)
from refusal import assert_admitted, assert_refused

RULES = {
    "spiffe_exact": lambda pki: {"spiffe_ids": ["spiffe://example.org/ns/default/sa/client"]},
    "spiffe_prefix": lambda pki: {"spiffe_ids": ["spiffe://example.org/ns/default/*"]},
    "uri_exact": lambda pki: {"uri_sans": ["spiffe://example.org/ns/other/sa/client2"]},
    "dns_exact": lambda pki: {"dns_sans": ["client.example.org"]},
    "dns_wildcard": lambda pki: {"dns_sans": ["*.other.org"]},
    "cn": lambda pki: {"common_names": ["client2"]},
    "ou": lambda pki: {"organizational_units": ["payments"]},
    "fingerprint_colons": lambda pki: {"sha256_fingerprints": [pki.sha256_fingerprint("client.crt")]},
    "fingerprint_plain_lower": lambda pki: {
        "sha256_fingerprints": [pki.sha256_fingerprint("client2.crt", colons=False).lower()]},
}

# (rule, client, certfile, admitted)
CASES = [
    ("spiffe_exact", "client", None, True),
    ("spiffe_exact", "client2", None, False),
    ("spiffe_exact", "client-int", "client-int-chain.crt", False),
    ("spiffe_prefix", "client", None, True),
    ("spiffe_prefix", "client-int", "client-int-chain.crt", True),
    ("spiffe_prefix", "client2", None, False),
    ("uri_exact", "client2", None, True),
    ("uri_exact", "client", None, False),
    ("dns_exact", "client", None, True),
    ("dns_exact", "client2", None, False),
    ("dns_wildcard", "client2", None, True),
    ("dns_wildcard", "client", None, False),
    ("cn", "client2", None, True),
    ("cn", "client", None, False),
    ("ou", "client", None, True),
    ("ou", "client2", None, False),
    ("fingerprint_colons", "client", None, True),
    ("fingerprint_colons", "client2", None, False),
    ("fingerprint_plain_lower", "client2", None, True),
    ("fingerprint_plain_lower", "client", None, False),
]


@pytest.fixture(scope="module")
def allow_daemon(mtlsd_bin, pki, tmp_path_factory):
    upstreams = {name: Upstream() for name in RULES}
    listeners = [server_listener(pki, upstreams[name].address, name=name,
                                 client_auth={"allow": rule(pki)})
                 for name, rule in RULES.items()]
    daemon = Mtlsd(mtlsd_bin, daemon_config(listeners), tmp_path_factory.mktemp("allow"))
    try:
        daemon.start()
        yield daemon, upstreams
    finally:
        daemon.kill()
        for up in upstreams.values():
            up.close()
    check_sanitizer_reports([daemon])


@pytest.mark.parametrize("rule,client,certfile,admitted", CASES,
                         ids=[f"{r}-{c}-{'hit' if a else 'miss'}" for r, c, _, a in CASES])
def test_allow_rule(allow_daemon, pki, rule, client, certfile, admitted):
    daemon, upstreams = allow_daemon
    up = upstreams[rule]
    before = up.connection_count()
    ctx = client_context(pki, client, certfile=certfile)
    ex = echo_roundtrip(daemon.addr(rule), ctx)
    if admitted:
        assert_admitted(daemon, ex, b"ping\n", listener=rule)
        assert up.connection_count() == before + 1
    else:
        if before == 0:
            assert_refused(daemon, up, ex, "not_authorized", listener=rule)
        else:  # an earlier hit on this listener already used the upstream
            assert ex.data == b"" and ex.alert, ex.error
            line = daemon.wait_for_access(client=ex.local)
            assert line["reason"] == "not_authorized" and line["listener"] == rule
            assert up.connection_count() == before
