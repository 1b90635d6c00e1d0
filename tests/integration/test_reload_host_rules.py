"""HTTP mode after a reload that keeps a connection (README "Reload", "HTTP mode"): each request's
host is held to the rules the connection is judged by now, the reloaded ones that admitted it
again, as a new connection's requests are. Review: the Host / :authority check was fixed when
the connection began, from its old runtime's rules: after a reload added an `sni` rule, a kept
connection admitted for one name still reached another host on the same upstream (a new one got
421), and one without an SNI had each host judged by the old rules, for the connection's whole
life (an HTTP/2 connection's many streams too).

Each test holds a kept connection and a victim (client2, which the new rules refuse), reloads,
and waits for the victim's reload_rejudged access line: the worker (workers: 1) then re-judged
its sessions, the kept one included.
"""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import pytest

from h2_client import H2Client
from helpers import reload_with, wait_request_line
from http_upstream import HttpRecorder, Reader
from mtlsd_harness import client_context, daemon_config, fmt_addr, server_listener
from test_http_mode import SockConn, read_response

TIMEOUT = 10
OTHER = "admin.example.org"  # a host the same upstream serves, which the SNI does not name


class Http1:
    """A kept-alive HTTP/1.1 connection with SNI `sni` (None: none sent). A 421 ends it."""

    def __init__(self, daemon, pki, sni, cert: str = "client", listener: str = "inbound"):
        ctx = client_context(pki, cert)
        ctx.check_hostname = False  # our certificate names localhost; other SNIs are asked too
        ctx.set_alpn_protocols(["http/1.1"])
        self.sock = ctx.wrap_socket(socket.create_connection(daemon.addr(listener), TIMEOUT),
                                    server_hostname=sni)
        self.local = fmt_addr(self.sock.getsockname())
        self.reader = Reader(SockConn(self.sock))

    def status(self, host: str, path: str) -> int:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = read_response(self.reader)
        assert answer is not None, f"closed before answering {path}"
        return answer[0]

    def close(self) -> None:
        self.sock.close()


class H2(H2Client):
    """An HTTP/2 connection with SNI `sni` (None: none sent); a 421 ends only its stream."""

    def __init__(self, daemon, pki, sni, cert: str = "client"):  # H2Client's, SNI chosen
        ctx = client_context(pki, cert)
        ctx.check_hostname = sni is not None
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(socket.create_connection(daemon.addr(), TIMEOUT),
                                    server_hostname=sni)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.ack_data, self.events, self.bodies, self.closed = True, [], {}, False
        self.conn.initiate_connection()
        self.flush()

    def status(self, host: str, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                     (":authority", host), (":path", path)], end_stream=True)
        self.bodies[sid] = bytearray()
        self.flush()
        return self.response(sid, TIMEOUT)[0]


PROTOCOLS = pytest.mark.parametrize("connect", [Http1, H2], ids=["http1", "h2"])


@pytest.fixture
def reloadable(start_mtlsd, make_upstream, pki):
    """reloadable(allow) -> (daemon, recorder, config(allow) -> its whole configuration)."""
    recorder = HttpRecorder()
    up = make_upstream(recorder.handler())

    def config(allow: dict) -> dict:
        listener = server_listener(pki, up.address, http={}, client_auth={"allow": allow})
        return daemon_config([listener], workers=1, reload={"watch": False})

    def start(allow: dict):
        return start_mtlsd(config(allow)), recorder, config
    return start


def victim(daemon, pki, sni: str = "localhost") -> Http1:
    """client2's connection, admitted (a request answered): the reload's rules refuse it."""
    v = Http1(daemon, pki, sni, cert="client2")
    assert v.status("localhost", "/victim") == 200
    return v


def reload_rejudged(daemon, config: dict, v: Http1) -> None:
    """Reloads to `config`; returns once its re-judging closed `v`, and so ran on the worker."""
    reload_with(daemon, config)
    line = daemon.wait_for_access(client=v.local, termination="reload_rejudged")
    assert line["detail"].startswith("reload_rejudged: "), line
    v.close()


def forwarded(recorder) -> list[str]:
    return [r.target for r in recorder.requests if r.target != "/victim"]


@PROTOCOLS
def test_a_reload_adding_an_sni_rule_holds_a_kept_connection_to_its_sni(reloadable, pki,
                                                                        connect):
    daemon, recorder, config = reloadable({"common_names": ["client", "client2"]})
    kept, v = connect(daemon, pki, "localhost"), victim(daemon, pki)
    assert kept.status(OTHER, "/before") == 200  # no rule judges the SNI yet
    reload_rejudged(daemon, config({"rules": [{"common_names": ["client"],
                                               "sni": ["localhost"]}]}), v)
    assert kept.status("localhost", "/same") == 200  # admitted again by its SNI: kept
    assert kept.status(OTHER, "/other") == 421
    kept.close()
    line = wait_request_line(daemon, path="/other", status=421)
    assert line["detail"] == (f"the request is for '{OTHER}', not the TLS server name "
                              "'localhost' the listener's rules judged"), line
    assert forwarded(recorder) == ["/before", "/same"]


@PROTOCOLS
def test_without_an_sni_each_host_is_judged_by_the_reloaded_rules(reloadable, pki, connect):
    daemon, recorder, config = reloadable(
        {"rules": [{"common_names": ["client", "client2"], "not": {"sni": [OTHER]}}]})
    kept, v = connect(daemon, pki, None), victim(daemon, pki)
    assert kept.status("secret.example.org", "/before") == 200  # not excluded yet
    reload_rejudged(daemon, config({"rules": [
        {"common_names": ["client"], "not": {"sni": [OTHER, "secret.example.org"]}}]}), v)
    assert kept.status("api.example.org", "/api") == 200
    assert kept.status("secret.example.org", "/secret") == 421
    kept.close()
    line = wait_request_line(daemon, path="/secret", status=421)
    assert line["detail"].startswith("the request is for 'secret.example.org', which the "
                                     "listener's rules do not admit without a TLS server "
                                     "name: "), line
    assert forwarded(recorder) == ["/before", "/api"]


@PROTOCOLS
def test_a_reload_loosening_the_rules_lets_a_kept_connection_ask_for_another_host(
        reloadable, pki, connect):
    daemon, recorder, config = reloadable(
        {"rules": [{"common_names": ["client", "client2"], "sni": ["localhost"]}]})
    kept, v = connect(daemon, pki, "localhost"), victim(daemon, pki)
    if connect is H2:
        assert kept.status(OTHER, "/refused") == 421  # its stream only: the connection stays
    else:  # a 421 ends an HTTP/1.1 connection: asked on another one
        probe = Http1(daemon, pki, "localhost")
        assert probe.status(OTHER, "/refused") == 421
        probe.close()
        assert kept.status("localhost", "/before") == 200
    reload_rejudged(daemon, config({"common_names": ["client"]}), v)
    assert kept.status(OTHER, "/after") == 200
    kept.close()
    assert forwarded(recorder) == ([] if connect is H2 else ["/before"]) + ["/after"]


def test_an_http2_connection_follows_each_reload_in_turn(reloadable, pki):
    """Its streams are held to each reload's rules as it comes: tightened, then loosened."""
    daemon, recorder, config = reloadable({"common_names": ["client", "client2"]})
    kept = H2(daemon, pki, "localhost")
    first, second = victim(daemon, pki, "victim.example.org"), victim(daemon, pki)
    assert kept.status(OTHER, "/first") == 200
    reload_rejudged(daemon, config({"rules": [{"common_names": ["client", "client2"],
                                               "sni": ["localhost"]}]}), first)
    assert kept.status(OTHER, "/tightened") == 421
    reload_rejudged(daemon, config({"common_names": ["client"]}), second)
    assert kept.status(OTHER, "/loosened") == 200
    kept.close()
    assert forwarded(recorder) == ["/first", "/loosened"]


def test_a_reload_removing_the_listener_keeps_the_rules_that_judged_it_last(
        start_mtlsd, make_upstream, pki):
    """A kept connection whose listener a later reload removes runs on under the rules that
    judged it last (review: it went back to those it started with, undoing the reload that had
    tightened them), also one that asked nothing in between. The second reload's re-judging is
    seen by a victim on the other listener."""
    recorder = HttpRecorder()
    up = make_upstream(recorder.handler())

    def config(inbound: dict | None, spare: dict) -> dict:
        listeners = [server_listener(pki, up.address, http={}, client_auth={"allow": inbound})]
        if inbound is None:
            listeners = []
        listeners.append(server_listener(pki, up.address, name="spare", http={},
                                         client_auth={"allow": spare}))
        return daemon_config(listeners, workers=1, reload={"watch": False})

    both = {"common_names": ["client", "client2"]}
    daemon = start_mtlsd(config(both, both))
    kept = H2(daemon, pki, "localhost")
    late = H2(daemon, pki, "localhost")  # asks nothing until its listener is gone
    first = victim(daemon, pki)
    second = Http1(daemon, pki, "localhost", cert="client2", listener="spare")
    assert second.status("localhost", "/victim") == 200
    assert kept.status(OTHER, "/before") == 200
    tightened = {"rules": [{"common_names": ["client"], "sni": ["localhost"]}]}
    reload_rejudged(daemon, config(tightened, both), first)
    assert kept.status(OTHER, "/tightened") == 421
    reload_rejudged(daemon, config(None, {"common_names": ["client"]}), second)
    assert kept.status("localhost", "/same") == 200
    assert kept.status(OTHER, "/after-removal") == 421
    assert late.status(OTHER, "/late") == 421
    kept.close()
    late.close()
    assert forwarded(recorder) == ["/before", "/same"]
