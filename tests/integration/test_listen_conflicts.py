"""Listening endpoints that collide, a failed reload that must leave live listeners alone,
`mtlsd check` agreeing with `run` on admin.address and on summed durations, and signals that
arrive while the daemon is still starting.

The signals awaited are the daemon's own: its "ready" line (or its exit), the "reloaded" /
"reload failed" line of each reload, and, for the startup signal test, the kernel's record of
the process having reached main() (SIGPIPE ignored, in /proc/PID/status).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from test_cli import line_of, located_lines, output
from mtlsd_harness import (Mtlsd, client_context, daemon_config, echo_roundtrip, free_port,
                           run_cli, server_listener, tls_exchange, write_config)

RELOADED = "reloaded"
FAILED = "reload failed; still serving the previous configuration"
STARTUP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 15.0


# --- helpers --------------------------------------------------------------------------------

def unix_roundtrip(path: str | Path, pki, payload: bytes = b"ping\n") -> bytes:
    """A TLS connection over the unix socket at `path`; the echoed bytes (raises on failure)."""
    ex = tls_exchange(str(path), client_context(pki, "client"), payload, expect=len(payload))
    if ex.error is not None:
        raise ex.error
    return ex.data


def startup_outcome(daemon: Mtlsd, timeout: float = STARTUP_TIMEOUT) -> str:
    """'exited' once the process ended, 'ready' once it logged "ready" (whichever comes first)."""
    deadline = time.monotonic() + timeout
    while True:
        if any(line.get("msg") == "ready" for line in daemon.logs()):
            return "ready"
        if not daemon.running():
            return "exited"
        if time.monotonic() >= deadline:
            raise AssertionError(f"mtlsd neither ready nor exited in {timeout}s:\n"
                                 f"{daemon.output_tail()}")
        time.sleep(0.01)


def assert_refused_to_start(daemon: Mtlsd, names: tuple[str, str]) -> str:
    outcome = startup_outcome(daemon)
    out = daemon.output_tail(80)
    bound = {l["listener"]: l["address"] for l in daemon.logs() if l.get("msg") == "listening"}
    assert outcome == "exited", (
        f"mtlsd started (listening: {bound}) although its listen addresses collide:\n{out}")
    rc = daemon.wait_exit(5)
    assert rc != 0, f"exit {rc}:\n{out}"
    low = out.lower()
    errors = [l for l in daemon.logs() if l.get("level") == "error"]
    names_both = any(all(n in str(l) for n in names) for l in errors)
    # `check`'s own words when the text shows it (the configuration is refused before binding).
    assert "in use" in low or "same address" in low or "overlaps" in low or names_both, (
        f"exit {rc}, but no error says the address is in use / the same address:\n{out}")
    return out


def wait_reload_outcome(daemon: Mtlsd, since: int) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") in (RELOADED, FAILED),
                               timeout=RELOAD_TIMEOUT, since=since)




# --- bug 1: a failed reload must not break a live unix listener ----------------------------

def unix_listener_serving(start_mtlsd, make_upstream, pki, short_tmp):
    """A daemon with listener `u` on a unix socket, reloaded by SIGHUP only, answering:
    (its upstream, the socket's path, its listen address, the daemon)."""
    up = make_upstream()
    sock_path = short_tmp / "u.sock"
    listen = f"unix:{sock_path}"
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address, name="u", listen=listen)],
                                       reload={"watch": False}))
    assert unix_roundtrip(sock_path, pki) == b"ping\n"
    return up, sock_path, listen, daemon


def test_failed_reload_keeps_unix_listener_serving(start_mtlsd, make_upstream, pki, short_tmp):
    up, sock_path, listen, daemon = unix_listener_serving(start_mtlsd, make_upstream, pki,
                                                          short_tmp)
    inode_before = os.stat(sock_path).st_ino

    # A port another process holds (no SO_REUSEPORT): the added listener cannot bind, so the
    # whole reload fails, after `u2` (u renamed, same path) was already bound.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        mark = daemon.log_mark()
        write_config(daemon.config_path, daemon_config(
            [server_listener(pki, up.address, name="u2", listen=listen),
             server_listener(pki, up.address, name="t", listen=f"127.0.0.1:{port}")],
            reload={"watch": False}))
        daemon.send_signal(signal.SIGHUP)
        line = wait_reload_outcome(daemon, mark)
        assert line["msg"] == FAILED, f"the reload was expected to fail (port {port} held): {line}"

        assert daemon.running(), daemon.output_tail()
        try:
            got = unix_roundtrip(sock_path, pki)
        except OSError as e:
            raise AssertionError(f"the previous configuration's unix listener {listen} no longer "
                                 f"accepts after the failed reload: {e!r}") from e
        assert got == b"ping\n", got
        assert os.stat(sock_path).st_ino == inode_before, \
            f"{sock_path} was unlinked and replaced by the failed reload"


def test_a_reload_that_renames_a_unix_listener_moves_its_path_to_the_new_one(
        start_mtlsd, make_upstream, pki, short_tmp):
    """The other side of the bug above: the same rename, in a reload that goes ahead. The new
    listener is bound beside the path and renamed over it, so clients reach it at the same path
    from then on, and no temporary socket is left behind."""
    up, sock_path, listen, daemon = unix_listener_serving(start_mtlsd, make_upstream, pki,
                                                          short_tmp)
    inode_before = os.stat(sock_path).st_ino
    mark = daemon.log_mark()
    write_config(daemon.config_path, daemon_config(
        [server_listener(pki, up.address, name="u2", listen=listen)], reload={"watch": False}))
    daemon.send_signal(signal.SIGHUP)
    line = wait_reload_outcome(daemon, mark)
    assert line["msg"] != FAILED, line
    assert unix_roundtrip(sock_path, pki) == b"ping\n"
    assert daemon.wait_for_access(listener="u2")["result"] == "accepted"
    assert sorted(p.name for p in short_tmp.iterdir() if p.name.startswith("u.sock")) == \
        ["u.sock"]
    # Renamed, not re-bound: the same socket (see test_a_renamed_listener_keeps_its_sockets).
    assert os.stat(sock_path).st_ino == inode_before


def listening_inodes(port: int) -> set[int]:
    """The inodes of the TCP sockets listening on `port` (/proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[1].endswith(":%04X" % port) and cols[3] == "0A":
                    found.add(int(cols[9]))
    return found


def test_a_renamed_listener_keeps_its_sockets(start_mtlsd, make_upstream, pki):
    """A rename at the same address hands the listener's sockets to the new name. Review: it
    bound new ones beside them and closed the old, and the kernel reset what their accept
    queues held: about 1% of the connections made during a rename under load."""
    up = make_upstream()
    port = free_port()
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="a", listen=f"127.0.0.1:{port}")],
        reload={"watch": False}))
    before = listening_inodes(port)
    assert before, f"nothing listens on {port}"
    line = reload_to(daemon, [server_listener(pki, up.address, name="b",
                                              listen=f"127.0.0.1:{port}")])
    assert line["msg"] == RELOADED, line
    assert line["listeners_started"] == "b" and line["listeners_stopped"] == "a", line
    assert listening_inodes(port) == before
    ex = echo_roundtrip(("127.0.0.1", port), client_context(pki, "client"))
    assert ex.error is None
    assert daemon.wait_for_access(client=ex.local)["listener"] == "b"
    # And back: the name a listener had before is a rename like any other.
    line = reload_to(daemon, [server_listener(pki, up.address, name="a",
                                              listen=f"127.0.0.1:{port}")])
    assert line["msg"] == RELOADED, line
    assert listening_inodes(port) == before
    ex = echo_roundtrip(("127.0.0.1", port), client_context(pki, "client"))
    assert daemon.wait_for_access(client=ex.local)["listener"] == "a"


def reload_to(daemon: Mtlsd, listeners: list[dict]) -> dict:
    mark = daemon.log_mark()
    write_config(daemon.config_path, daemon_config(listeners, reload={"watch": False}))
    daemon.send_signal(signal.SIGHUP)
    return wait_reload_outcome(daemon, mark)


def test_a_reload_may_move_a_listener_to_an_overlapping_address(start_mtlsd, make_upstream, pki):
    """Second read of ad2f8d7: the address a listener gives up counts as free for the listener
    that moves, also when the new address overlaps it without being spelt the same (a wildcard
    to one address on the same port); the old cut's probe collided with the old socket."""
    up = make_upstream()
    port = free_port()
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="in", listen=f"0.0.0.0:{port}")],
        reload={"watch": False}))
    line = reload_to(daemon, [server_listener(pki, up.address, name="in",
                                              listen=f"127.0.0.1:{port}")])
    assert line["msg"] == RELOADED, line
    assert echo_roundtrip(("127.0.0.1", port), client_context(pki, "client")).error is None


def test_a_freed_address_goes_to_one_new_listener_only(start_mtlsd, make_upstream, pki):
    """Second read of ad2f8d7: two new listeners could both take over the address one stopped
    listener gave up, and split its connections between two policies."""
    up = make_upstream()
    port = free_port()
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="a", listen=f"127.0.0.1:{port}")],
        reload={"watch": False}))
    line = reload_to(daemon, [
        server_listener(pki, up.address, name="b", listen=f"127.0.0.1:{port}"),
        server_listener(pki, up.address, name="c", listen=f"localhost:{port}")])
    assert line["msg"] == FAILED and "in use" in line.get("error", str(line)), line
    # Named at its entry in the file (review: a reload error without FILE:LINE:COL).
    assert re.search(r"mtlsd\.yaml:\d+:\d+: listener 'c': cannot listen on", line["error"]), line
    ex = echo_roundtrip(("127.0.0.1", port), client_context(pki, "client"))
    assert ex.error is None
    assert daemon.wait_for_access(client=ex.local)["listener"] == "a"


def test_a_unix_path_spelt_anew_or_long_is_taken_over_on_reload(start_mtlsd, make_upstream, pki,
                                                                 short_tmp):
    """Second read of ad2f8d7: the same path spelt with './' was not recognised as the one the
    listener gives up, and the temporary name (the path plus a suffix) could pass sun_path's
    108 bytes: both reloads failed."""
    up = make_upstream()
    deep = short_tmp / ("d" * max(1, 95 - len(str(short_tmp)) - len("/x.sock") - 1))
    deep.mkdir()
    sock_path = deep / "x.sock"
    assert len(str(sock_path)) >= 90, sock_path
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="u", listen=f"unix:{sock_path}")],
        reload={"watch": False}))
    line = reload_to(daemon, [server_listener(pki, up.address, name="u",
                                              listen=f"unix:{deep}/./x.sock")])
    assert line["msg"] == RELOADED, line
    line = reload_to(daemon, [server_listener(pki, up.address, name="u2",
                                              listen=f"unix:{sock_path}")])
    assert line["msg"] == RELOADED, line
    assert unix_roundtrip(sock_path, pki) == b"ping\n"
    assert daemon.wait_for_access(listener="u2")["result"] == "accepted"
    assert sorted(p.name for p in deep.iterdir()) == ["x.sock"]


# --- bug 2: colliding listen addresses -------------------------------------------------------

def test_same_tcp_port_spelled_two_ways_is_refused(start_mtlsd, pki):
    port = free_port()
    daemon = start_mtlsd(daemon_config([
        server_listener(pki, "127.0.0.1:9", name="a", listen=f"127.0.0.1:{port}"),
        server_listener(pki, "127.0.0.1:9", name="b", listen=f"localhost:{port}")]),
        wait_ready=False)
    assert_refused_to_start(daemon, ("a", "b"))


def test_second_daemon_cannot_take_a_port_the_first_holds(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    first = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    host, port = first.addr()
    second = start_mtlsd(daemon_config([server_listener(pki, up.address, name="inbound",
                                                        listen=f"{host}:{port}")]),
                         wait_ready=False)
    outcome = startup_outcome(second)
    out = second.output_tail(80)
    assert outcome == "exited", f"a second mtlsd started on {host}:{port}, which the first holds:\n{out}"
    rc = second.wait_exit(5)
    assert rc != 0, f"exit {rc}:\n{out}"
    assert "in use" in out.lower(), f"no 'in use' in the second daemon's error:\n{out}"
    assert "cannot listen" in out, out
    # The first one is untouched and serves every connection.
    ctx = client_context(pki, "client")
    for _ in range(4):
        ex = echo_roundtrip((host, port), ctx)
        assert ex.error is None and ex.data == b"ping\n", ex


def test_same_unix_path_spelled_two_ways_is_refused(start_mtlsd, pki, short_tmp):
    daemon = start_mtlsd(daemon_config([
        server_listener(pki, "127.0.0.1:9", name="u", listen=f"unix:{short_tmp}/u.sock"),
        server_listener(pki, "127.0.0.1:9", name="v", listen=f"unix:{short_tmp}/./u.sock")]),
        wait_ready=False)
    assert_refused_to_start(daemon, ("u", "v"))


# --- bugs 3 and 4: `check` agrees with `run` --------------------------------------------------

def _check_rejects(mtlsd_bin, tmp_path, name: str, config: dict, marker: str, key: str):
    cfg = write_config(tmp_path / f"{name}.yaml", config)
    text = cfg.read_text()
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = output(proc)
    assert proc.returncode == 1, f"check exited {proc.returncode}:\n{out}"
    want = line_of(text, marker)
    located = [msg for line, msg in located_lines(out, str(cfg)) if line == want]
    assert located, f"no '{cfg}:{want}:COL: ...' diagnostic in:\n{out}"
    assert any(key in msg for msg in located), f"the diagnostic does not name {key}:\n{out}"


def test_check_refuses_a_host_name_as_admin_address(mtlsd_bin, pki, tmp_path):
    config = daemon_config([server_listener(pki, "127.0.0.1:9")],
                           admin={"address": "localhost:19931"})
    _check_rejects(mtlsd_bin, tmp_path, "admin_host", config, "localhost:19931",
                   "admin.address")


def test_check_refuses_a_summed_duration_past_the_cap(mtlsd_bin, pki, tmp_path):
    summed = "596523h" * 5  # each part is in range; the sum (2982615h) is not
    config = daemon_config([server_listener(pki, "127.0.0.1:9")],
                           shutdown={"drain_timeout": summed})
    _check_rejects(mtlsd_bin, tmp_path, "drain_sum", config, summed, "drain_timeout")


# --- bug 5: a signal during startup ----------------------------------------------------------

def _in_main(pid: int) -> bool:
    """True once the process ignores SIGPIPE: the first thing mtlsd's daemon does, so the
    dynamic loader (tens of ms, and no program can guard it) is done."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGPIPE - 1)))
    return False


ROUNDS = 3


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_signal_during_startup_does_not_kill(start_mtlsd, make_upstream, pki, sig):
    up = make_upstream()
    config = daemon_config([server_listener(pki, up.address)], reload={"watch": False})
    for round_ in range(ROUNDS):
        daemon = start_mtlsd(config, wait_ready=False)
        pidfd = os.pidfd_open(daemon.pid)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while daemon.proc.poll() is None and not _in_main(daemon.pid):
                assert time.monotonic() < deadline, "mtlsd never reached main()"
            stop = threading.Event()
            sent = [0]

            def spam():
                while not stop.is_set():
                    try:
                        signal.pidfd_send_signal(pidfd, sig)
                    except ProcessLookupError:
                        return
                    sent[0] += 1
                    time.sleep(0.001)
            spammer = threading.Thread(target=spam, daemon=True)
            spammer.start()
            try:
                daemon.wait_ready()
            except AssertionError as e:
                raise AssertionError(
                    f"round {round_ + 1}: mtlsd did not survive {signal.Signals(sig).name} during "
                    f"startup (exit {daemon.proc.poll()}, {sent[0]} sent):\n{e}") from None
            finally:
                stop.set()
                spammer.join(5)
        finally:
            os.close(pidfd)
        assert sent[0] > 0
        assert daemon.running(), f"exit {daemon.proc.poll()}:\n{daemon.output_tail()}"
        ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
        assert ex.error is None and ex.data == b"ping\n", ex
        rc = daemon.stop()
        assert rc == 0, f"round {round_ + 1}: exit {rc} on SIGTERM:\n{daemon.output_tail()}"
