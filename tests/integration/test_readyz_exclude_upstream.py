"""GET /readyz?exclude=upstream (Kubernetes' apiserver convention, `/readyz?exclude=<check>`):
what /readyz answers, with the listeners' upstream checks left out. The kit's native-sidecar
startupProbe asks it: the kubelet starts the app only once that probe passes, so a startup probe
that waits for the app's own upstream check never passes (review: with an upstream_check the
kubelet restarted mtlsd every 30 s, and the app never started). Plain /readyz, and /readyz with
any other query, answer as they always did.

Real parts only: the real daemon, a real address that refuses connections as the upstream (the
app not started yet), plain HTTP to the admin listener.
"""

from __future__ import annotations

import signal
import time

from mtlsd_harness import client_context, daemon_config, open_tls, server_listener

TIMEOUT = 10.0  # waits for a state a check certainly reaches: a bound for failing
CHECK = {"interval": "500ms", "timeout": "500ms"}


def wait_for_readyz(daemon, ok, what: str, path: str = "/readyz"):
    """Polls `path` until ok(response); returns it."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        res = daemon.admin_request(path)
        if ok(res):
            return res
        assert time.monotonic() < deadline, f"{what}; last {path}: {res.status} {res.text!r}"
        time.sleep(0.02)


def test_a_failing_upstream_check_is_left_out(start_mtlsd, pki, refused_address):
    daemon = start_mtlsd(daemon_config([server_listener(pki, refused_address,
                                                        upstream_check=CHECK)]))
    down = wait_for_readyz(daemon, lambda r: r.status == 503, "the upstream check never failed")
    assert down.text == ("not ready: the upstream check fails\n"
                         f"upstream inbound ({refused_address}): down: connecting: "
                         "Connection refused\n"), down.text

    # The startup probe's question: everything but the upstream check is ready.
    res = daemon.admin_request("/readyz?exclude=upstream")
    assert (res.status, res.text) == (200, "ready\n"), res.text
    # Among other parameters, in absolute form (RFC 9112 3.2.2), and with HEAD.
    for target in ("/readyz?verbose&exclude=upstream",
                   "http://127.0.0.1/readyz?exclude=upstream&x=1"):
        res = daemon.admin_request(target)
        assert (res.status, res.text) == (200, "ready\n"), (target, res.text)
    head = daemon.admin_request("/readyz?exclude=upstream", method="HEAD")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "6")

    # Any other query is ignored, as before: the answer of plain /readyz.
    for target in ("/readyz?", "/readyz?exclude=upstreams", "/readyz?exclude=Upstream",
                   "/readyz?exclude=", "/readyz?exclude=etcd", "/readyz?x=exclude=upstream",
                   "/readyz?exclude%3Dupstream"):
        res = daemon.admin_request(target)
        assert (res.status, res.text) == (503, down.text), (target, res.text)
    assert daemon.admin_request("/healthz?exclude=upstream").text == "ok\n"


def test_what_else_is_not_ready_still_counts(start_mtlsd, make_upstream, pki):
    """Only the upstream checks are left out: a draining mtlsd is not ready either way."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, upstream_check=CHECK)],
                                       shutdown={"drain_timeout": "30s"}))
    wait_for_readyz(daemon, lambda r: f"upstream inbound ({up.address}): up" in r.text,
                    "the upstream check never passed")
    assert daemon.admin_request("/readyz?exclude=upstream").text == "ready\n"
    sock = open_tls(daemon.addr(), client_context(pki, "client"))
    try:
        sock.sendall(b"hold\n")
        assert sock.recv(5) == b"hold\n"
        daemon.send_signal(signal.SIGTERM)  # drains while this connection stays open
        res = wait_for_readyz(daemon, lambda r: r.status == 503, "never 503 while draining",
                              path="/readyz?exclude=upstream")
        assert res.text == "not ready: draining\n", res.text
        assert daemon.running(), "mtlsd exited with a connection still open"
    finally:
        sock.close()
    assert daemon.wait_exit(5) == 0
