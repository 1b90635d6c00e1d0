"""Fixtures and helpers shared by the test_revocation_*.py files.

The revocation PKI is generated after the loopback OCSP/CRL server is bound,
so that the certificates' AIA and CRL distribution point URLs name it. Import
the fixtures into a test module with `from revocation_env import *`.
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from mtlsd_harness import daemon_config, echo, generate_pki, server_listener
from revocation_servers import OcspConfig, RevocationServer

__all__ = ["revocation_server", "rpki", "rv", "serve_rv", "metric", "metrics_text",
           "assert_metric_delta", "ROOT_CRL", "DELTA_CRL"]

ROOT_CRL = "/root.crl"
DELTA_CRL = "/root-delta.crl"


@pytest.fixture(scope="session")
def revocation_server():
    server = RevocationServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def rpki(revocation_server, tmp_path_factory):
    """A PKI whose client-ocsp*/server-ocsp certs name the server's /ocsp and
    whose client-cdp* certs name its /root.crl (client-cdp-many: its slow1-3.crl first)."""
    return generate_pki(tmp_path_factory.mktemp("rpki") / "pki", env={
        "GEN_PKI_OCSP_URL": revocation_server.ocsp_url,
        "GEN_PKI_CRL_URL": revocation_server.url(ROOT_CRL),
        "GEN_PKI_DELTA_URL": revocation_server.url(DELTA_CRL),
    })


@pytest.fixture
def rv(revocation_server, rpki):
    """The server, reset: a delegated OCSP responder for the root's database,
    and the root's CRL (every revocation) at /root.crl."""
    revocation_server.reset()
    revocation_server.ocsp = OcspConfig(index=rpki.path("db/root/index.txt"),
                                        ca=rpki.path("ca.crt"),
                                        signer=rpki.path("ocsp-signer.crt"),
                                        key=rpki.path("ocsp-signer.key"))
    revocation_server.crls = {ROOT_CRL: rpki.read("crl-all.pem")}
    yield revocation_server
    revocation_server.reset()


@pytest.fixture
def serve_rv(start_mtlsd, make_upstream, rpki, rv):
    """serve_rv(revocation={...}, handler=echo, top=None, **listener) -> (Mtlsd, Upstream)."""
    def serve(revocation: dict, handler=echo, *, top: dict | None = None, **overrides):
        up = make_upstream(handler)
        listener = server_listener(rpki, up.address, revocation=revocation, **overrides)
        daemon = start_mtlsd(daemon_config([listener], **(top or {})))
        return daemon, up
    return serve


# --- metrics ------------------------------------------------------------------

def metrics_text(daemon) -> str:
    host, port = daemon.admin_address.rsplit(":", 1)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(daemon, name: str, text: str | None = None, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in (text if text is not None else metrics_text(daemon)).splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def assert_metric_delta(daemon, before: str, name: str, delta: float, **labels: str) -> None:
    now = metric(daemon, name, **labels)
    was = metric(daemon, name, before, **labels)
    assert now - was == delta, f"{name}{labels}: {was} -> {now}, expected +{delta}"
