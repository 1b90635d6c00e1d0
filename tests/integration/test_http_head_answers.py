"""mtlsd's own HTTP/1.1 answers to a HEAD request carry no body (RFC 9110 9.3.2): the head alone,
with the Content-Length a GET would have had. Each carried its text body, which a client that
pipelined reads as the start of its next response (curl: "Excess found"); http1_relay_fuzz
found it."""
from __future__ import annotations

import pytest

from test_http_mode import raw_exchange
from upstream import reply_after


def head_only(out: bytes, status: bytes) -> None:
    assert out.startswith(b"HTTP/1.1 " + status), out
    assert out.endswith(b"\r\n\r\n"), out  # nothing after the head
    assert b"Content-Length: " in out, out


def test_a_417_to_head_has_no_body(serve, pki):
    daemon, _ = serve(http={})
    out, _ = raw_exchange(daemon, pki, b"HEAD / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n")
    head_only(out, b"417 ")


def test_a_502_to_head_has_no_body(serve, pki):
    """The upstream answers something that is not HTTP: mtlsd's 502."""
    daemon, _ = serve(reply_after(b"\r\n\r\n", b"not http\r\n\r\n"), http={})
    out, _ = raw_exchange(daemon, pki, b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
    head_only(out, b"502 ")


@pytest.mark.parametrize("method, body", [(b"GET", True), (b"HEAD", False)])
def test_a_refusal_after_the_handshake_answers_head_without_a_body(serve, refused_address, pki,
                                                                   method, body):
    daemon, _ = serve(upstream=refused_address, http={})
    out, _ = raw_exchange(daemon, pki, method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 "), out
    assert out.endswith(b"upstream unavailable\n" if body else b"\r\n\r\n"), out
