"""`mtlsd health --url URL` (the image's HEALTHCHECK) against the real daemon, on the one
HTTP client and URL parser of net/: exit 0 on 200, 1 with the reason otherwise, 2 for a bad
URL; bounded by --timeout whatever the server does; host names resolved (c-ares, /etc/hosts);
never through a proxy from the environment.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time

import pytest

from mtlsd_harness import daemon_config, run_cli, server_listener


def health(binary: str, url: str, *extra: str, env: dict | None = None):
    return subprocess.run([binary, "health", "--url", url, *extra], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL, env=env)


def test_ready_daemon_is_healthy(mtlsd_bin, serve):
    daemon, _ = serve()
    proc = health(mtlsd_bin, daemon.admin_url("/readyz"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_host_name_and_a_proxy_in_the_environment(mtlsd_bin, serve):
    """localhost resolves; HTTP_PROXY pointing nowhere is ignored (the probe is local)."""
    daemon, _ = serve()
    port = daemon.admin_address.rsplit(":", 1)[1]
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:1", "http_proxy": "http://127.0.0.1:1"}
    proc = health(mtlsd_bin, f"http://localhost:{port}/healthz", env=env)
    assert proc.returncode == 0, proc.stderr


def test_not_ready_is_exit_1_with_the_body(mtlsd_bin, start_mtlsd, pki):
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{refused.getsockname()[1]}"
    try:
        daemon = start_mtlsd(daemon_config([server_listener(
            pki, address, upstream_check={"interval": "100ms", "timeout": "50ms"})]))
        deadline = time.monotonic() + 5
        while daemon.admin_request("/readyz").status != 503:
            assert time.monotonic() < deadline, "never 503"
            time.sleep(0.02)
        proc = health(mtlsd_bin, daemon.admin_url("/readyz"))
    finally:
        refused.close()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"mtlsd health: {daemon.admin_url('/readyz')}: HTTP 503: not ready: "
                           f"the upstream check fails\nupstream inbound ({address}): down: "
                           "connecting: Connection refused\n"), proc.stderr


def test_timeout_bounds_a_silent_server(mtlsd_bin):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # accepts (in the backlog), never answers
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/readyz"
        started = time.monotonic()
        proc = health(mtlsd_bin, url, "--timeout", "300ms")
        elapsed = time.monotonic() - started
    finally:
        srv.close()
    assert proc.returncode == 1
    assert proc.stderr == f"mtlsd health: {url}: no answer within 300ms (HTTP exchange " \
        "unfinished)\n", proc.stderr
    # Unbounded, the probe would wait for the silent server until subprocess.run's 30 s; the
    # margin over 300 ms is for a sanitized binary's start-up and leak check on a loaded machine.
    assert elapsed < 10.0, elapsed


@pytest.mark.parametrize("url", ["https://127.0.0.1:9901/readyz", "127.0.0.1:9901",
                                 "http://user@127.0.0.1:9901/", "http://127.0.0.1:99999/"])
def test_bad_url_is_a_usage_error(mtlsd_bin, url):
    proc = run_cli(mtlsd_bin, "health", "--url", url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"mtlsd health: '{url}' is not an http:// URL or "
                           "unix:/PATH[:/TARGET]\n"), proc.stderr


@pytest.mark.parametrize("timeout", ["0", "0s", "soon"])
def test_a_timeout_that_is_no_duration_above_zero_is_a_usage_error(mtlsd_bin, timeout):
    """Review: --timeout 0 was taken, and every probe failed at once ("no answer within 0ms")."""
    proc = health(mtlsd_bin, "http://127.0.0.1:9901/readyz", "--timeout", timeout)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"mtlsd health: invalid --timeout '{timeout}' (a duration above 0)\n"


def test_a_timeout_too_long_says_so(mtlsd_bin):
    """Review: `--timeout 10000000h` was called no "duration above 0"."""
    proc = health(mtlsd_bin, "http://127.0.0.1:9901/readyz", "--timeout", "10000000h")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "mtlsd health: invalid --timeout '10000000h' (too long: at most " \
        "596523h)\n", proc.stderr


class _LargeAnswers(http.server.BaseHTTPRequestHandler):
    """200 with 200 KiB of body, by Content-Length (/length) or chunked (/chunked)."""
    protocol_version = "HTTP/1.1"
    body = b"x" * (200 * 1024)

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for at in range(0, len(self.body), 16384):
                piece = self.body[at:at + 16384]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["/length", "/chunked"])
def test_a_200_with_a_large_body_is_healthy(mtlsd_bin, path):
    """Review: a 200 over 64 KiB (/metrics of a daemon with many listeners) was exit 1,
    "response larger than 65536 bytes". The status decides; the body is not kept."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LargeAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = health(mtlsd_bin, f"http://127.0.0.1:{server.server_address[1]}{path}")
    finally:
        server.shutdown()
        server.server_close()
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr


def test_an_admin_server_on_a_unix_socket(mtlsd_bin, start_mtlsd, make_upstream, pki, tmp_path):
    """Review: `admin.address: unix:/...` could not be probed: neither `unix:/PATH` (the form
    admin.address takes) nor nginx's `http://unix:/PATH:/TARGET` was a URL health took."""
    sock = str(tmp_path / "admin.sock")
    up = make_upstream()
    start_mtlsd(daemon_config([server_listener(pki, up.address)], admin={"address": "unix:" + sock}))
    for url in ["unix:" + sock, f"unix:{sock}:/healthz", f"http://unix:{sock}:/readyz"]:
        proc = health(mtlsd_bin, url)
        assert (proc.returncode, proc.stderr) == (0, ""), (url, proc.stderr)
    proc = health(mtlsd_bin, f"unix:{sock}:/nothing")
    assert proc.returncode == 1 and "HTTP 404" in proc.stderr, proc.stderr
    proc = health(mtlsd_bin, "unix:" + str(tmp_path / "none.sock"))
    assert proc.returncode == 1 and "none.sock" in proc.stderr, proc.stderr
