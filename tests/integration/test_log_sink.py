"""Log outputs: a log reader that stops reading must not stop traffic (issue 11 #8), and
log.access_log_path sends access lines to stdout or a file that logrotate can rotate (SIGUSR1).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import select
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from helpers import wait_until
from mtlsd_harness import (MtlsdError, client_context, daemon_config, echo_roundtrip,
                           parse_address, parse_metrics, server_listener, write_config)

# 64 KiB of pipe plus mtlsd's 128 KiB queue hold about 600 access lines: this is well past it.
REQUESTS = 1500
CLIENT_TIMEOUT = 5.0


def _read_until_ready(fd: int, proc: subprocess.Popen, timeout: float = 10.0) -> list[dict]:
    """Reads the stuck-to-be pipe only until the "ready" line; returns the lines read."""
    deadline = time.monotonic() + timeout
    buf = b""
    lines: list[dict] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = json.loads(raw)
                lines.append(line)
                if line.get("msg") == "ready":
                    return lines
        elif proc.poll() is not None:
            break
    raise MtlsdError(f"no ready line (exit {proc.poll()}): {lines[-5:]}")


def _admin(address: str, path: str) -> tuple[int, bytes]:
    host, port = parse_address(address)
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def _run_stuck(mtlsd_bin, tmp_path, pki, upstream, access_log_path: str):
    """mtlsd whose stderr (and stdout) are pipes that nobody reads after start-up."""
    cfg = daemon_config([server_listener(pki, upstream.address)],
                        log={"access_log_path": access_log_path})
    config_path = write_config(tmp_path / "mtlsd.yaml", cfg)
    err_r, err_w = os.pipe()
    out_r, out_w = os.pipe()
    proc = subprocess.Popen([mtlsd_bin, "run", "--config", str(config_path)],
                            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=tmp_path)
    os.close(err_w)
    os.close(out_w)
    return proc, err_r, out_r


def _stuck_sink_scenario(mtlsd_bin, tmp_path, pki, make_upstream, access_log_path: str,
                         reader_comes_back: bool):
    upstream = make_upstream()
    proc, err_r, out_r = _run_stuck(mtlsd_bin, tmp_path, pki, upstream, access_log_path)
    try:
        lines = _read_until_ready(err_r, proc)
        listen = next(l["address"] for l in lines if l.get("msg") == "listening")
        admin = next(l["address"] for l in lines if l.get("msg") == "admin listening")
        addr = parse_address(listen)
        ctx = client_context(pki, "client")
        # From here on nobody reads err_r or out_r again; they stay open, so writes block
        # rather than fail.

        def one(_):
            start = time.monotonic()
            ex = echo_roundtrip(addr, ctx)
            return ex, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(REQUESTS)))
        failed = [(ex.error, t) for ex, t in results if ex.error is not None or ex.data != b"ping\n"]
        assert not failed, f"{len(failed)} of {REQUESTS} requests failed: {failed[:3]}"
        slowest = max(t for _, t in results)
        assert slowest < CLIENT_TIMEOUT, slowest

        status, _ = _admin(admin, "/healthz")
        assert status == 200
        status, body = _admin(admin, "/metrics")
        assert status == 200
        dropped = parse_metrics(body.decode()).get("mtlsd_access_log_dropped_total")
        # Lines that could not be written were dropped and counted, none held a worker.
        assert dropped > 0, dropped
        assert dropped < REQUESTS

        collected: list[bytes] = []
        reader = None
        if reader_comes_back:
            # The reader returns: what was queued flows, then new lines, and one line says how
            # many were lost in between.
            reader = threading.Thread(target=_drain_into, args=(err_r, collected), daemon=True)
            reader.start()
            ex = echo_roundtrip(addr, ctx)
            assert ex.error is None
            deadline = time.monotonic() + 10
            while True:
                lines = _json_lines(b"".join(collected))
                notice = [l for l in lines if l.get("msg", "").startswith("log lines dropped")]
                mine = [l for l in lines if l.get("msg") == "access" and l["client"] == ex.local]
                if notice and mine:
                    break
                assert time.monotonic() < deadline, lines[-3:]
                time.sleep(0.01)
            assert notice[0]["level"] == "warn" and notice[0]["lines"] >= dropped

        # Drain completes and the final flush gives up on a dead reader: a prompt exit 0.
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 5.0
        if reader:
            reader.join(5)
            assert _json_lines(b"".join(collected))[-1]["msg"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(err_r)
        os.close(out_r)


def test_stuck_stderr_does_not_stop_traffic_or_shutdown(mtlsd_bin, tmp_path, pki, make_upstream):
    # Events and access lines on stderr; nobody reads it until the end.
    _stuck_sink_scenario(mtlsd_bin, tmp_path, pki, make_upstream, "", reader_comes_back=False)


def test_stuck_stderr_recovers_and_says_what_was_lost(mtlsd_bin, tmp_path, pki, make_upstream):
    _stuck_sink_scenario(mtlsd_bin, tmp_path, pki, make_upstream, "", reader_comes_back=True)


def test_stuck_stdout_access_log_does_not_stop_traffic(mtlsd_bin, tmp_path, pki, make_upstream):
    # Access lines on stdout (a second pipe nobody reads), events on stderr (also unread).
    _stuck_sink_scenario(mtlsd_bin, tmp_path, pki, make_upstream, "stdout",
                         reader_comes_back=False)


def _drain_into(fd: int, out: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        out.append(chunk)


def _json_lines(data: bytes) -> list[dict]:
    text = data.decode(errors="replace")
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]


# --- log.access_log_path --------------------------------------------------------

def _file_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]


def _wait_lines(path: Path, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _file_lines(path)
        if len(lines) >= count:
            return lines
        if time.monotonic() >= deadline:
            raise MtlsdError(f"{path}: {len(lines)} lines, expected {count}")
        time.sleep(0.01)


def _requests(daemon, pki, n: int) -> list[str]:
    ctx = client_context(pki, "client")
    clients = []
    for _ in range(n):
        ex = echo_roundtrip(daemon.addr(), ctx)
        assert ex.error is None
        clients.append(ex.local)
    return clients


def test_access_log_to_stdout(serve, pki):
    daemon, _ = serve(top={"log": {"access_log_path": "stdout"}})
    clients = _requests(daemon, pki, 3)
    lines = _wait_lines(daemon.stdout_path, 3)
    assert [l["client"] for l in lines] == clients
    assert all(l["msg"] == "access" for l in lines)
    assert daemon.access_logs() == []  # events (stderr) carry no access line
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0
    assert all(l["msg"] == "access" for l in _file_lines(daemon.stdout_path))


def test_access_log_file_and_sigusr1_reopen(serve, pki, tmp_path):
    log_file = tmp_path / "logs" / "access.log"
    log_file.parent.mkdir()
    daemon, _ = serve(top={"log": {"access_log_path": str(log_file), "level": "debug"}})
    assert oct(log_file.stat().st_mode & 0o777) == oct(0o640 & ~_umask())

    first = _requests(daemon, pki, 5)
    # Each line is written when its session ends, which may be after the next one began: compare
    # as sets of clients, not in order.
    assert sorted(l["client"] for l in _wait_lines(log_file, 5)) == sorted(first)

    # logrotate: rename, then signal; the daemon keeps running and says so.
    rotated = log_file.with_name("access.log.1")
    log_file.rename(rotated)
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGUSR1)
    daemon.wait_for_log(lambda l: l.get("msg") == "access log reopened", since=mark)
    assert daemon.running()

    second = _requests(daemon, pki, 4)
    assert sorted(l["client"] for l in _wait_lines(log_file, 4)) == sorted(second)
    assert sorted(l["client"] for l in _file_lines(rotated)) == sorted(first)  # nothing lost/moved

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0
    # Events stay out of the access file, access lines out of the events.
    for path in (log_file, rotated):
        assert {l["msg"] for l in _file_lines(path)} == {"access"}
    assert len(_file_lines(log_file)) == 4
    assert daemon.access_logs() == []
    msgs = [l["msg"] for l in daemon.logs()]
    assert "ready" in msgs and "stopped" in msgs


def test_a_fifo_no_process_reads_does_not_stop_the_start(serve, pki, tmp_path):
    """Review: an access_log_path naming a FIFO with no reader blocked the start in open():
    never ready, nothing served. The open fails at once now: access lines go to stderr, and
    the error says why."""
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    daemon, _ = serve(top={"log": {"access_log_path": str(fifo)}})
    line = daemon.wait_for_log(
        lambda l: l.get("msg") == "cannot open log.access_log_path; access lines go to stderr")
    assert "a FIFO that no process reads" in line["error"], line
    client = _requests(daemon, pki, 1)[0]
    daemon.wait_for_access(client=client)


def test_an_access_log_that_fails_says_why(serve, pki):
    """Review: lines lost to a failing output (a full disk) were reported only as "an output
    did not keep up"; the notice names the error now. It comes without waiting for another event
    line to be logged (test_access_log_failures.py)."""
    daemon, _ = serve(top={"log": {"access_log_path": "/dev/full"}})
    _requests(daemon, pki, 1)
    wait_until(lambda: daemon.scrape().get("mtlsd_access_log_dropped_total") >= 1,
               what="the lost access line counted")
    line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("log lines dropped"))
    assert line["msg"] == "log lines dropped: writing to an output failed", line
    assert line["error"] == os.strerror(errno.ENOSPC), line


def test_sigusr1_without_a_file_is_harmless(serve, pki):
    daemon, _ = serve()
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGUSR1)
    daemon.wait_for_log(lambda l: "nothing to reopen" in l.get("msg", ""), since=mark)
    ex = _requests(daemon, pki, 1)[0]
    daemon.wait_for_access(client=ex)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0


def test_check_refuses_an_unwritable_access_log_path(mtlsd_bin, tmp_path, pki):
    cfg = daemon_config([server_listener(pki, "127.0.0.1:9")],
                        log={"access_log_path": str(tmp_path / "missing" / "access.log")})
    path = write_config(tmp_path / "mtlsd.yaml", cfg)
    res = subprocess.run([mtlsd_bin, "check", "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1, res
    text = path.read_text().splitlines()
    line = next(i for i, l in enumerate(text, 1) if "access_log_path" in l)
    assert f"{path}:{line}:" in res.stderr, res.stderr
    assert "does not exist" in res.stderr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_changed_access_log_path_waits_for_a_restart(serve, pki, tmp_path):
    log_file = tmp_path / "access.log"
    daemon, up = serve(top={"log": {"access_log_path": str(log_file)}})
    config = yaml.safe_load(daemon.config_path.read_text())
    config["log"]["access_log_path"] = "stdout"
    config["log"]["level"] = "debug"
    mark = daemon.log_mark()
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    warning = daemon.wait_for_log(lambda l: "access_log_path" in l.get("msg", ""), since=mark)
    assert warning["level"] == "warn" and warning["path"] == str(log_file)
    daemon.wait_for_log(lambda l: l.get("msg") == "reloaded", since=mark)
    clients = _requests(daemon, pki, 2)
    # Sorted: each line is written when its session ends, and two workers may end them in either order.
    assert sorted(l["client"] for l in _wait_lines(log_file, 2)) == sorted(clients)  # still the file
    assert not daemon.stdout_path.read_text()


def test_closed_standard_descriptors_are_held_by_dev_null(start_mtlsd, make_upstream, pki):
    """Started with stdin, stdout and stderr closed, mtlsd holds descriptors 0-2 with /dev/null,
    so that no event loop descriptor, listener or peer socket takes their numbers and receives
    what is written to stdout or stderr (before, the event loop's eventfds took 1 and 2)."""
    def close_standard_descriptors():
        for fd in (0, 1, 2):
            os.close(fd)
    listener = server_listener(pki, make_upstream().address)
    # Text format: readiness comes by NOTIFY_SOCKET alone, there being no log to read.
    daemon = start_mtlsd(daemon_config([listener], log={"format": "text"}),
                         preexec_fn=close_standard_descriptors)
    held = {fd: os.readlink(f"/proc/{daemon.pid}/fd/{fd}") for fd in (0, 1, 2)}
    assert held == {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0
