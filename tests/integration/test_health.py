"""Health that reflects the service (issue 16): mtlsd_config_last_reload_successful,
a listener removed by reload dropping its series, the process_* metrics read
from /proc/self inside the sandbox, and the systemd watchdog (WATCHDOG=1 over
NOTIFY_SOCKET while the workers answer).
"""

from __future__ import annotations

import os
import resource
import statistics
import time

from helpers import reload_with
from mtlsd_harness import (Mtlsd, client_context, daemon_config, proc_fd_count, server_listener,
                           tls_exchange)

TIMEOUT = 5.0


def wait_scrape(daemon: Mtlsd, ok, what: str, timeout: float = TIMEOUT):
    """Scrape until ok(metrics) holds (bounded); returns that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        m = daemon.scrape()
        if ok(m):
            return m
        assert time.monotonic() < deadline, f"{what}; last scrape:\n" + "\n".join(m.lines)
        time.sleep(0.02)


def test_last_reload_successful_holds_until_fixed(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    config = daemon_config([server_listener(pki, up.address)], reload={"watch": False})
    daemon = start_mtlsd(config)
    m = daemon.scrape()
    assert m.types["mtlsd_config_last_reload_successful"] == "gauge"
    assert m.get("mtlsd_config_last_reload_successful") == 1

    reload_with(daemon, "listeners: [\n", wait=False)  # unparseable: the reload fails
    m = wait_scrape(daemon, lambda m: m.get("mtlsd_config_reloads_total", result="failure") == 1,
                    "failed reload not counted")
    assert m.get("mtlsd_config_last_reload_successful") == 0
    # Still 0 at the next scrape: nothing resets it but a good reload.
    assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 0

    reload_with(daemon, config)
    m = wait_scrape(daemon, lambda m: m.get("mtlsd_config_reloads_total", result="success") == 1,
                    "good reload not counted")
    assert m.get("mtlsd_config_last_reload_successful") == 1


def test_removed_listener_drops_its_series(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    config = daemon_config([server_listener(pki, up.address, name="inbound"),
                            server_listener(pki, up.address, name="old")],
                           reload={"watch": False})
    daemon = start_mtlsd(config)
    # Traffic through "old" so that it has non-zero series too.
    ex = tls_exchange(daemon.addr("old"), client_context(pki, "client"), b"hi\n")
    assert ex.data == b"hi\n", ex.error
    m = wait_scrape(daemon,
                    lambda m: m.get("mtlsd_connections_total", listener="old",
                                    result="accepted") == 1, "no accepted connection on old")
    assert any(labels.get("listener") == "old" for labels in _all_labels(m))

    config["listeners"] = config["listeners"][:1]
    reload_with(daemon, config)
    m = wait_scrape(daemon, lambda m: not any(labels.get("listener") == "old"
                                              and name != "mtlsd_tls_handshakes_total"
                                              for name, labels in _named_labels(m)),
                    "series of the removed listener 'old' are still exported")
    assert m.get("mtlsd_config_reloads_total", result="success") == 1
    # The kept listener keeps its series.
    assert m.series("mtlsd_connections_active", listener="inbound")
    assert len(m.series("mtlsd_handshake_failures_total", listener="inbound")) > 1

    # Back again: its series reappear (from 0; Prometheus's rate() handles the reset).
    config["listeners"].append(server_listener(pki, up.address, name="old"))
    reload_with(daemon, config)
    m = wait_scrape(daemon, lambda m: m.series("mtlsd_connections_active", listener="old"),
                    "re-added listener has no series")
    assert m.get("mtlsd_connections_total", listener="old", result="accepted") == 0


def _named_labels(m):
    return [(name, dict(labels)) for (name, labels) in m.samples]


def _all_labels(m):
    return [labels for _, labels in _named_labels(m)]


def test_process_metrics_are_sane(serve, pki):
    daemon, _ = serve()
    started = time.time()
    m = daemon.scrape()
    for name, kind in [("process_start_time_seconds", "gauge"),
                       ("process_cpu_seconds_total", "counter"),
                       ("process_resident_memory_bytes", "gauge"),
                       ("process_virtual_memory_bytes", "gauge"),
                       ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                       ("process_threads", "gauge")]:
        assert m.types.get(name) == kind, (name, m.types.get(name))
    # Started a moment ago (clock tick resolution, test start-up).
    assert abs(m.get("process_start_time_seconds") - started) < 30
    assert m.get("process_resident_memory_bytes") > 1 << 20
    assert m.get("process_virtual_memory_bytes") >= m.get("process_resident_memory_bytes")
    fds = m.get("process_open_fds")
    assert 0 < fds <= m.get("process_max_fds")
    # Same limit as the one mtlsd inherited from us; the count is what /proc says (±2 for the
    # scrape's own connection and directory handle).
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert m.get("process_max_fds") == soft
    assert abs(fds - proc_fd_count(daemon.pid)) <= 2
    # Two workers, the control thread and the revocation and log threads at least.
    assert m.get("process_threads") >= 3
    assert m.get("process_threads") == len(os.listdir(f"/proc/{daemon.pid}/task"))
    # Counted in clock ticks (10 ms): start-up alone may take less, so handshakes until it moves.
    cpu = m.get("process_cpu_seconds_total")
    assert cpu >= 0
    ctx, deadline = client_context(pki, "client"), time.monotonic() + TIMEOUT
    while daemon.scrape().get("process_cpu_seconds_total") <= cpu:
        assert time.monotonic() < deadline, "process_cpu_seconds_total does not count"
        for _ in range(5):
            assert tls_exchange(daemon.addr(), ctx, expect=5).data == b"ping\n"
    # Sandboxed (the default): the daemon survived reading /proc and getrlimit.
    assert daemon.running()


def test_watchdog_pings_while_workers_answer(start_mtlsd, make_upstream, pki):
    def child_env():
        # After fork, so that WATCHDOG_PID is the daemon's own pid (sd_watchdog_enabled checks).
        # NOTIFY_SOCKET is the harness's own (it waits there for READY=1).
        os.environ["WATCHDOG_USEC"] = "400000"
        os.environ["WATCHDOG_PID"] = str(os.getpid())

    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]),
                         preexec_fn=child_env)
    # Those already queued were sent while start_mtlsd() waited for "ready": read at once,
    # their gaps say nothing. Only pings that arrive while we wait are timed.
    while daemon.next_notification(0) is not None:
        pass
    pings = []
    deadline = time.monotonic() + 10.0
    while len(pings) < 11:
        assert time.monotonic() < deadline, f"only {len(pings)} pings: {daemon.notifications}"
        msg = daemon.next_notification(max(0.0, deadline - time.monotonic()))
        if msg is not None and "WATCHDOG=1" in msg.split("\n"):
            pings.append(time.monotonic())
    assert any("READY=1" in msg for msg in daemon.notifications), daemon.notifications
    # About every 200 ms (half of WATCHDOG_USEC): the median gap, as a stall of this reader
    # (or of the daemon's timer) on a loaded machine makes one gap long and the next short.
    # Pinging at the full 400 ms interval, or not at all, fails; so does a long silence.
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert 0.1 < statistics.median(gaps) < 0.3, gaps
    assert max(gaps) < 1.5, gaps
    lines = daemon.logs()
    assert any(line.get("msg") == "systemd watchdog enabled" for line in lines)
    # Traffic flows while pinging: the workers answer.
    ex = tls_exchange(daemon.addr("inbound"), client_context(pki, "client"), b"x\n")
    assert ex.data == b"x\n", ex.error
    assert daemon.running()


def test_no_watchdog_pings_for_another_pid(start_mtlsd, make_upstream, pki):
    """WATCHDOG_PID names another process (systemd set it for the parent): no pings,
    only READY=1. Guards against a test above that would pass with pings sent always."""
    def child_env():
        os.environ["WATCHDOG_USEC"] = "400000"
        os.environ["WATCHDOG_PID"] = "1"

    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]), preexec_fn=child_env)
    deadline = time.monotonic() + 1.0      # five intervals' worth of pings, were they sent
    while daemon.next_notification(max(0.0, deadline - time.monotonic())) is not None:
        pass
    assert any("READY=1" in msg for msg in daemon.notifications), daemon.notifications
    assert not any("WATCHDOG=1" in msg for msg in daemon.notifications), daemon.notifications
