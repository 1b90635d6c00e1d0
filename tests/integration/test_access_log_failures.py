"""An access-log output that fails: the events say so at once, at most once per 10 s per output
with the count since the last such line, and once more when the output writes again; a FIFO
whose reader was not running at start is opened by SIGUSR1.

Review findings: lines lost on a full disk were told only when some unrelated event was logged
(t6_full.py), and SIGUSR1 after a failed open at start said "names no file" and never tried
again (t12_fifo_start.py)."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
from pathlib import Path

import pytest

from clients import client_context, echo_roundtrip
from helpers import wait_until

FAILED = "log lines dropped: writing to an output failed"
AGAIN = "log output writing again"
ENOSPC = os.strerror(errno.ENOSPC)


def _connections(daemon, pki, n: int) -> list[str]:
    ctx = client_context(pki, "client")
    clients = []
    for _ in range(n):
        ex = echo_roundtrip(daemon.addr(), ctx)
        assert ex.error is None, ex.error
        clients.append(ex.local)
    return clients


def _dropped(daemon) -> float:
    return daemon.scrape().get("mtlsd_access_log_dropped_total")


def _told(daemon, msg: str) -> list[dict]:
    return [l for l in daemon.logs() if l.get("msg") == msg]


def test_a_failing_access_log_is_told_at_once_then_at_most_every_10s(serve, pki):
    # /dev/full: every write fails with ENOSPC. No other event is logged after "ready".
    daemon, _ = serve(top={"log": {"access_log_path": "/dev/full"}})
    _connections(daemon, pki, 1)
    first = daemon.wait_for_log(lambda l: l.get("msg") == FAILED)
    assert first["level"] == "warn", first
    assert first["output"] == "/dev/full" and first["error"] == ENOSPC, first
    assert first["lines"] >= 1, first

    # More losses within 10 s: counted, not told line by line.
    _connections(daemon, pki, 3)
    wait_until(lambda: _dropped(daemon) == 4, what="4 access lines counted as dropped")
    assert len(_told(daemon, FAILED)) == 1, _told(daemon, FAILED)

    # At exit what was not told yet is: the lines of the warnings add up to every line lost.
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0
    told = _told(daemon, FAILED)
    assert len(told) == 2, told
    assert sum(l["lines"] for l in told) == 4, told
    assert all(l["output"] == "/dev/full" for l in told), told


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root: the tests run as root here), filled to the last block by
    `filler`; yields (directory, filler)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (root needed): {res.stderr.strip()}")
    try:
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        yield mnt, filler
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_told_at_once_and_when_it_takes_lines_again(serve, pki, tiny_tmpfs):
    mnt, filler = tiny_tmpfs
    access_log = mnt / "access.log"
    daemon, _ = serve(top={"log": {"access_log_path": str(access_log)}})
    _connections(daemon, pki, 2)
    warning = daemon.wait_for_log(lambda l: l.get("msg") == FAILED)
    assert warning["output"] == str(access_log) and warning["error"] == ENOSPC, warning
    wait_until(lambda: _dropped(daemon) == 2, what="2 access lines counted as dropped")

    # Room again: the next line is written, and one line says the output writes again, with the
    # lines lost since the warning.
    filler.unlink()
    mark = daemon.log_mark()
    client = _connections(daemon, pki, 1)[0]
    again = daemon.wait_for_log(lambda l: l.get("msg") == AGAIN, since=mark)
    assert again["level"] == "warn" and again["output"] == str(access_log), again
    assert again["error"] == ENOSPC, again
    assert warning["lines"] + again["lines"] == _dropped(daemon) == 2, (warning, again)
    assert len(_told(daemon, FAILED)) == 1
    written = [json.loads(l) for l in access_log.read_text().splitlines() if l.strip()]
    assert [l["client"] for l in written] == [client], written


def _fifo_lines(fd: int, want: int, timeout: float = 5.0) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < want:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no access line on the FIFO within {timeout}s: {buf!r}"
        chunk = os.read(fd, 65536)
        assert chunk, "the FIFO's writer closed"
        buf += chunk
    return [json.loads(l) for l in buf.splitlines() if l.strip()]


def test_sigusr1_opens_a_fifo_whose_reader_was_not_running_at_start(serve, pki, tmp_path):
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    daemon, _ = serve(top={"log": {"access_log_path": str(fifo)}})
    daemon.wait_for_log(
        lambda l: l.get("msg") == "cannot open log.access_log_path; access lines go to stderr")

    # Still no reader: SIGUSR1 tries, and says why it failed.
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGUSR1)
    line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("SIGUSR1"), since=mark)
    assert line["msg"] == "SIGUSR1: cannot open log.access_log_path; access lines still go to " \
                          "stderr", line
    assert line["level"] == "error" and "a FIFO that no process reads" in line["error"], line
    first = _connections(daemon, pki, 1)[0]
    daemon.wait_for_access(client=first)  # on stderr, as before

    # The reader runs now: SIGUSR1 opens the FIFO, and access lines go there from then on.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mark = daemon.log_mark()
        daemon.send_signal(signal.SIGUSR1)
        line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("SIGUSR1"), since=mark)
        assert line["msg"] == "SIGUSR1: access log opened; access lines go there from now", line
        assert line["path"] == str(fifo), line
        second = _connections(daemon, pki, 1)[0]
        lines = _fifo_lines(reader, 1)
        assert [(l["msg"], l["client"]) for l in lines] == [("access", second)], lines
        assert [l["client"] for l in daemon.access_logs()] == [first]

        # A later SIGUSR1 reopens it, as a file opened at start.
        mark = daemon.log_mark()
        daemon.send_signal(signal.SIGUSR1)
        daemon.wait_for_log(lambda l: l.get("msg") == "access log reopened", since=mark)
    finally:
        os.close(reader)
