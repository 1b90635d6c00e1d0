"""OCSP and CRL fetches through a forward HTTP proxy named by the environment
(issue 16): HTTP_PROXY / http_proxy (lower case wins), NO_PROXY / no_proxy (a
host, a domain suffix, an IP, a CIDR, or *), read once at start. The proxy is
a real one on loopback (forward_proxy.py) that records every request, so each
test proves whether a fetch went through it; the revocation server only ever
sees origin-form requests (it answers absolute-form ones with 404).

Only the daemon gets the variables (set in the child before exec): the test's
own HTTP clients must not go through the proxy.
"""

from __future__ import annotations

import os
import socket

import pytest

from mtlsd_harness import client_context, daemon_config, echo_roundtrip, server_listener
from refusal import assert_admitted, assert_refused
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import ROOT_CRL
from forward_proxy import ForwardProxy

OCSP = {"ocsp": "leaf", "ocsp_timeout": "1s"}
CDP = {"crl_distribution_points": True, "ocsp_timeout": "1s"}
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy",
                   "NO_PROXY")


@pytest.fixture
def proxy():
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture
def serve_env(start_mtlsd, make_upstream, rpki, rv):
    """serve_env(env, revocation) -> (Mtlsd, Upstream): the daemon runs with exactly these
    proxy variables (every other one unset)."""
    def serve(env: dict[str, str], revocation: dict, wait_ready: bool = True):
        def set_env():  # in the child, before exec
            for name in PROXY_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(env)
        up = make_upstream()
        daemon = start_mtlsd(daemon_config([server_listener(rpki, up.address,
                                                            revocation=revocation)]),
                             wait_ready=wait_ready, preexec_fn=set_env)
        return daemon, up
    return serve


def test_ocsp_request_goes_through_the_proxy(serve_env, rpki, rv, proxy):
    daemon, _ = serve_env({"HTTP_PROXY": proxy.url}, OCSP)
    line = daemon.wait_for_log(lambda l: l.get("msg") ==
                               "OCSP and CRL fetches go through an HTTP proxy")
    assert line["proxy"] == proxy.address and line["from"] == "HTTP_PROXY", line
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    seen = proxy.seen()
    assert [(r.method, r.target) for r in seen] == [("POST", rv.ocsp_url)], seen
    assert seen[0].host == rv.ocsp_url.split("/")[2], seen
    assert rv.ocsp_requests() == 1


def test_crl_download_goes_through_the_proxy(serve_env, rpki, rv, proxy):
    daemon, up = serve_env({"http_proxy": proxy.address}, CDP)  # no scheme: http:// (curl)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-cdp-revoked"))
    assert_refused(daemon, up, ex, "revoked", alert=False)
    assert [(r.method, r.target) for r in proxy.seen()] == [("GET", rv.url(ROOT_CRL))]
    assert rv.crl_requests(ROOT_CRL) == 1


def test_lower_case_wins(serve_env, rpki, rv, proxy, refused_address):
    daemon, _ = serve_env({"http_proxy": proxy.url, "HTTP_PROXY": f"http://{refused_address}"},
                          OCSP)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert len(proxy.seen()) == 1


@pytest.mark.parametrize("no_proxy", [
    {"NO_PROXY": "example.org, 127.0.0.1"},
    {"no_proxy": "127.0.0.0/8"},
    {"NO_PROXY": "*"},
])
def test_no_proxy_goes_direct(serve_env, rpki, rv, proxy, no_proxy):
    daemon, _ = serve_env({"HTTP_PROXY": proxy.url, **no_proxy}, OCSP)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert proxy.seen() == []
    assert rv.ocsp_requests() == 1


def test_no_proxy_for_another_domain_still_proxies(serve_env, rpki, rv, proxy):
    daemon, _ = serve_env({"HTTP_PROXY": proxy.url, "NO_PROXY": ".internal,10.0.0.0/8"}, OCSP)
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert len(proxy.seen()) == 1


def test_unreachable_proxy_is_the_reason(serve_env, rpki, rv, refused_address):
    daemon, up = serve_env({"HTTP_PROXY": f"http://{refused_address}"}, OCSP)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert f"proxy {refused_address}: connecting: Connection refused" in line["detail"], line
    assert rv.ocsp_requests() == 0


def test_a_proxys_own_refusal_names_the_proxy(serve_env, rpki, rv, proxy):
    """Review: a 407 from the proxy was logged as the responder's answer ("no answer from the
    responder: HTTP 407 Proxy Authentication Required (ocsp http://...)"), so the operator
    would look at the responder, not at the proxy."""
    proxy.refuse_with = 407
    daemon, up = serve_env({"http_proxy": proxy.url}, OCSP)
    ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
    line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    assert f"HTTP 407 Proxy Authentication Required via proxy {proxy.address}" in line["detail"], \
        line
    assert rv.ocsp_requests() == 0


def test_https_proxy_alone_is_reported_and_not_used(serve_env, rpki, rv, proxy):
    daemon, _ = serve_env({"HTTPS_PROXY": proxy.url}, OCSP)
    line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("HTTPS_PROXY is set, but"))
    assert line["level"] == "warn", line
    assert_admitted(daemon, echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp")),
                    b"ping\n")
    assert proxy.seen() == [] and rv.ocsp_requests() == 1


@pytest.mark.parametrize("value, why", [
    ("https://proxy.example:3128", "not an http:// URL"),
    ("http://user:secret@proxy.example:3128", "credentials in the URL are not supported"),
    ("http://proxy.example:0", "the port must be 1-65535"),
])
def test_unusable_proxy_variable_stops_the_start(serve_env, value, why):
    daemon, _ = serve_env({"HTTP_PROXY": value}, OCSP, wait_ready=False)
    assert daemon.wait_exit() == 1, daemon.output_tail()
    line = daemon.wait_for_log(lambda l: l.get("msg") ==
                               "cannot use the proxy environment; not starting")
    assert line["error"].startswith(f"HTTP_PROXY='{value.replace('secret', 'REDACTED')}': "
                                    f"{why}"), line
    assert "secret" not in daemon.output_tail(200)


def test_silent_proxy_is_bounded_by_ocsp_timeout(serve_env, rpki, rv):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever answers
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        daemon, up = serve_env({"HTTP_PROXY": address}, {**OCSP, "ocsp_timeout": "300ms"})
        ex = echo_roundtrip(daemon.addr(), client_context(rpki, "client-ocsp"))
        line = assert_refused(daemon, up, ex, "revocation_unavailable", alert=False)
    finally:
        silent.close()
    assert ("no answer within 300ms (HTTP exchange unfinished) via proxy " + address) \
        in line["detail"], line
    assert rv.ocsp_requests() == 0
