"""listeners[].upstream_check (issue 16): tcp and http probes of the upstream on the
control thread, reported in /readyz (503 only when EVERY check fails; each
listener's state listed in the body) and in mtlsd_upstream_up{listener}; checks
follow reloads; the scrape with the gauge passes `promtool check metrics`.

Real parts only: the real daemon, real TCP listeners and a real HTTP server
whose status the test switches (up, down, flapping).
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, server_listener, write_config

TIMEOUT = 10.0  # waits for a state a check will certainly reach: a bound for failing
# Quick, yet a loopback check does not time out because a sanitized daemon's control thread was
# descheduled for a moment (the gauge is read right after /readyz showed the state).
FAST = {"interval": "500ms", "timeout": "500ms"}


class StatusServer:
    """HTTP/1.1 on 127.0.0.1 answering every GET with `status`; records the paths.
    hang=True: accepts and reads, never answers (a stuck upstream)."""

    def __init__(self) -> None:
        self.status = 200
        self.hang = False
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                owner.paths.append(self.path)
                if owner.hang:
                    time.sleep(3.0)  # well past FAST's timeout
                    return
                body = b"x" * 200_000  # larger than the client's body cap: headers decide
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Location", "/elsewhere")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the checker stops reading after the headers
                self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def status_server():
    s = StatusServer()
    yield s
    s.close()


def gauge(daemon, listener: str = "inbound"):
    """mtlsd_upstream_up{listener}, or None when the series is absent."""
    m = daemon.scrape()
    try:
        return m.get("mtlsd_upstream_up", listener=listener)
    except KeyError:
        return None


def wait_ready_state(daemon, ok, what: str, timeout: float = TIMEOUT):
    """Polls /readyz until ok(response); returns it."""
    deadline = time.monotonic() + timeout
    while True:
        res = daemon.admin_request("/readyz")
        if ok(res):
            return res
        assert time.monotonic() < deadline, f"{what}; last /readyz: {res.status} {res.text!r}"
        time.sleep(0.02)


def up_line(listener: str, address: str, rest: str = "") -> str:
    return f"upstream {listener} ({address}): up{rest}"


def down_line(listener: str, address: str, rest: str) -> str:
    return f"upstream {listener} ({address}): down: {rest}"


def checked(pki, upstream: str, name: str = "inbound", **check) -> dict:
    return server_listener(pki, upstream, name=name, upstream_check={**FAST, **check})


# --- tcp ----------------------------------------------------------------------

def test_no_check_means_no_series_and_the_plain_body(serve):
    daemon, _ = serve()
    res = daemon.admin_request("/readyz")
    assert (res.status, res.text) == (200, "ready\n")
    assert "mtlsd_upstream_up" not in daemon.scrape().types  # no check, no series


def test_tcp_check_up(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([checked(pki, up.address, type="tcp")]))
    res = wait_ready_state(daemon, lambda r: up_line("inbound", up.address) in r.text,
                           "tcp check never up")
    assert res.status == 200 and res.text.startswith("ready\n"), res.text
    assert gauge(daemon) == 1


def test_tcp_check_down_is_503_with_the_reason(start_mtlsd, pki, refused_address):
    daemon = start_mtlsd(daemon_config([checked(pki, refused_address)]))  # type defaults to tcp
    res = wait_ready_state(daemon, lambda r: r.status == 503, "never 503")
    assert res.text == ("not ready: the upstream check fails\n" +
                        down_line("inbound", refused_address,
                                  "connecting: Connection refused") + "\n"), res.text
    assert gauge(daemon) == 0
    daemon.wait_for_log(lambda l: l.get("msg") == "upstream check failed"
                        and l.get("listener") == "inbound"
                        and l.get("error") == "connecting: Connection refused")


def test_host_name_upstream_is_resolved_by_the_shared_resolver(start_mtlsd, make_upstream, pki):
    """localhost comes from /etc/hosts through c-ares, inside the sandbox, on the control
    thread; every address is tried in turn (::1 may refuse, 127.0.0.1 answers)."""
    up = make_upstream()
    address = "localhost:" + up.address.rsplit(":", 1)[1]
    daemon = start_mtlsd(daemon_config([checked(pki, address)]))
    res = wait_ready_state(daemon, lambda r: up_line("inbound", address) in r.text,
                           "host-name upstream never up")
    assert res.status == 200, res.text


def test_one_healthy_upstream_keeps_it_ready(start_mtlsd, make_upstream, pki, refused_address):
    """503 only when EVERY check fails: one listener's upstream down is reported, not fatal."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([checked(pki, up.address, name="good"),
                                        checked(pki, refused_address, name="bad")]))
    res = wait_ready_state(
        daemon, lambda r: up_line("good", up.address) in r.text and "upstream bad" in r.text
        and ": down: " in r.text, "both states never listed")
    assert res.status == 200, res.text
    assert res.text == ("ready\n" + up_line("good", up.address) + "\n" +
                        down_line("bad", refused_address, "connecting: Connection refused") +
                        "\n"), res.text
    assert (gauge(daemon, "good"), gauge(daemon, "bad")) == (1, 0)


def test_a_listener_without_a_check_keeps_it_ready(start_mtlsd, make_upstream, pki,
                                                   refused_address):
    """A listener without a check is taken to serve: the one failing check beside it is
    reported, and /readyz stays 200 (review: 503 took the whole pod out of its Service)."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, name="unchecked"),
                                        checked(pki, refused_address, name="bad")]))
    res = wait_ready_state(daemon, lambda r: ": down: " in r.text, "the failure never listed")
    assert res.status == 200, res.text
    assert res.text == ("ready\n" + down_line("bad", refused_address,
                                              "connecting: Connection refused") + "\n"), res.text


def test_tcp_check_follows_the_upstream_coming_and_going(start_mtlsd, make_upstream, pki):
    """A real listener appears on the checked port, then goes away: up, then down again."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        daemon = start_mtlsd(daemon_config([checked(pki, address)]))
        wait_ready_state(daemon, lambda r: r.status == 503, "never down")
        holder.listen(16)  # the same socket starts accepting
        wait_ready_state(daemon, lambda r: r.status == 200 and up_line("inbound", address) in r.text,
                         "never up after the upstream started listening")
        assert gauge(daemon) == 1
    finally:
        holder.close()
    wait_ready_state(daemon, lambda r: r.status == 503, "never down after the upstream closed")
    assert gauge(daemon) == 0


def test_unix_socket_upstream(start_mtlsd, make_upstream, pki, short_tmp):
    path = short_tmp / "up.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(16)
    try:
        daemon = start_mtlsd(daemon_config([checked(pki, f"unix:{path}")]))
        wait_ready_state(daemon, lambda r: up_line("inbound", f"unix:{path}") in r.text,
                         "unix upstream never up")
    finally:
        srv.close()
        path.unlink()
    wait_ready_state(daemon, lambda r: r.status == 503 and "down: connecting to" in r.text,
                     "unix upstream never down")


# --- http ---------------------------------------------------------------------

def test_http_check_2xx_and_3xx_are_up_5xx_down_and_it_flaps(start_mtlsd, pki, status_server):
    s = status_server
    # It counts transitions: an answer slower than the timeout would be one more. FAST's 500 ms
    # is long enough that a busy second core cannot make the upstream that slow.
    daemon = start_mtlsd(daemon_config([checked(pki, s.address, type="http",
                                                path="/healthz?deep=1")]))
    wait_ready_state(daemon, lambda r: up_line("inbound", s.address, ": HTTP 200") in r.text,
                     "never up on 200")
    assert s.paths and set(s.paths) == {"/healthz?deep=1"}, s.paths
    assert gauge(daemon) == 1
    # Several rounds of flapping: every transition shows in /readyz and the gauge.
    for _ in range(3):
        s.status = 503
        res = wait_ready_state(daemon, lambda r: r.status == 503, "never down on 503")
        assert res.text == ("not ready: the upstream check fails\n" +
                            down_line("inbound", s.address, "HTTP 503 Service Unavailable") +
                            "\n"), res.text
        assert gauge(daemon) == 0
        s.status = 302
        res = wait_ready_state(daemon, lambda r: r.status == 200, "never up on 302")
        assert up_line("inbound", s.address, ": HTTP 302") in res.text, res.text
        assert gauge(daemon) == 1
    s.status = 204
    wait_ready_state(daemon, lambda r: up_line("inbound", s.address, ": HTTP 204") in r.text,
                     "never up on 204")
    s.status = 404
    wait_ready_state(daemon, lambda r: r.status == 503 and "HTTP 404 Not Found" in r.text,
                     "a 404 is not up")
    # /readyz shows the new state before the check's log line is read back: wait for that line.
    daemon.wait_for_log(lambda l: l.get("msg") == "upstream check failed"
                        and "404" in l.get("error", ""))
    failed = [l for l in daemon.logs() if l.get("msg") == "upstream check failed"]
    passed = [l for l in daemon.logs() if l.get("msg") == "upstream check passed"]
    # Once per transition (302 -> 204 is none): 200, 3 x (503, 302), 404.
    assert len(failed) == 4 and len(passed) == 4, (failed, passed)


def test_http_check_asks_for_healthz_by_default(start_mtlsd, pki, status_server):
    """The contract's default path (interface.md: `path: /healthz`; it was `/`)."""
    s = status_server
    daemon = start_mtlsd(daemon_config([checked(pki, s.address, type="http")]))
    wait_ready_state(daemon, lambda r: up_line("inbound", s.address, ": HTTP 200") in r.text,
                     "never up on 200")
    assert set(s.paths) == {"/healthz"}, s.paths


def test_http_check_that_hangs_is_bounded_by_the_timeout(start_mtlsd, pki, status_server):
    status_server.hang = True
    daemon = start_mtlsd(daemon_config([checked(pki, status_server.address, type="http")]))
    res = wait_ready_state(daemon, lambda r: r.status == 503, "a hanging upstream never down")
    assert "down: no answer within 500ms (HTTP exchange unfinished)" in res.text, res.text


def test_http_check_refused(start_mtlsd, pki, refused_address):
    daemon = start_mtlsd(daemon_config([checked(pki, refused_address, type="http")]))
    res = wait_ready_state(daemon, lambda r: r.status == 503, "never down")
    assert down_line("inbound", refused_address, "connecting: Connection refused") in res.text


# --- reload -------------------------------------------------------------------

def test_checks_follow_reloads(start_mtlsd, make_upstream, pki, refused_address):
    up = make_upstream()
    plain = server_listener(pki, up.address)
    daemon = start_mtlsd(daemon_config([plain], reload={"watch": False}))
    assert gauge(daemon) is None

    reload_with(daemon, daemon_config([checked(pki, up.address)], reload={"watch": False}))
    wait_ready_state(daemon, lambda r: up_line("inbound", up.address) in r.text, "added check")
    assert gauge(daemon) == 1

    # The listener keeps its name, its upstream moves to a dead address: the check follows.
    moved = checked(pki, refused_address)
    reload_with(daemon, daemon_config([moved], reload={"watch": False}))
    res = wait_ready_state(daemon, lambda r: r.status == 503, "check did not follow the upstream")
    assert up.address not in res.text, res.text
    assert gauge(daemon) == 0

    # A second listener with a healthy upstream: ready again (not every check fails).
    reload_with(daemon, daemon_config([moved, checked(pki, up.address, name="second")],
                                 reload={"watch": False}))
    wait_ready_state(daemon, lambda r: r.status == 200 and up_line("second", up.address) in r.text,
                     "second listener's check")

    # Checks removed: the series go and the body is plain again.
    reload_with(daemon, daemon_config([plain], reload={"watch": False}))
    res = wait_ready_state(daemon, lambda r: r.text == "ready\n", "checks not removed")
    assert gauge(daemon) is None and gauge(daemon, "second") is None


def test_bad_check_is_refused_by_check_with_its_location(mtlsd_bin, tmp_path, pki):
    cfg = tmp_path / "bad.yaml"
    write_config(cfg, daemon_config([server_listener(
        pki, "127.0.0.1:1", upstream_check={"type": "http", "path": "health"})]))
    proc = subprocess.run([mtlsd_bin, "check", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{cfg}:" in proc.stderr and "listeners[0].upstream_check.path: 'health' must start " \
        "with /" in proc.stderr, proc.stderr


# --- Prometheus -------------------------------------------------------------------

def test_scrape_with_the_gauge_passes_promtool(start_mtlsd, make_upstream, pki, refused_address,
                                               tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's `prometheus` package"
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([checked(pki, up.address, name="good"),
                                        checked(pki, refused_address, name="bad")]))
    wait_ready_state(daemon, lambda r: r.text.count(": up") + r.text.count(": down") == 2,
                     "both checks answered")
    text = daemon.admin_request("/metrics").text
    assert 'mtlsd_upstream_up{listener="good"} 1' in text, text
    assert 'mtlsd_upstream_up{listener="bad"} 0' in text, text
    assert "# TYPE mtlsd_upstream_up gauge" in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), \
        proc.stdout + proc.stderr
