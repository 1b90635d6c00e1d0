"""Workers: every worker serves a unix listener (review: worker 0 alone accepted there, while a
TCP listener has one SO_REUSEPORT socket per worker), and `workers: 0` counts the CPUs the
process may use (review: under `taskset -c 0` it started as many workers as the host has CPUs).

Which worker holds what is read from the kernel, not timed: each worker is an event loop with
an epoll set of its own, and /proc/PID/fdinfo of an epoll descriptor lists the inode of every
file it watches; /proc/net/unix names the unix sockets bound to a path (a listening one, and
the connections it accepted) with their inodes.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import wait_until
from mtlsd_harness import client_context, daemon_config, open_tls, server_listener, tls_exchange
from test_listen_conflicts import RELOADED, reload_to

WORKERS = 2
BATCH = 4         # connections opened at once: a worker busy with one handshake leaves the next
MAX_HELD = 160    # to the other; at most this many held before giving up


def epoll_sets(pid: int) -> dict[int, set[int]]:
    """Each epoll instance of the process, by descriptor: the inodes of the files it watches."""
    sets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except FileNotFoundError:  # closed meanwhile
            continue
        sets[int(fd)] = {int(m, 16) for m in re.findall(r"^tfd:.*\bino:([0-9a-f]+)", info, re.M)}
    return sets


def unix_sockets(where: Path) -> dict[int, str]:
    """The unix sockets bound in directory `where` (/proc/net/unix), inode -> "listening" |
    "connected" (the connections a listening socket accepted carry its address too). The address
    is the one bound: a socket renamed since still goes by its first name."""
    found = {}
    with open("/proc/net/unix") as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            if len(cols) == 8 and Path(cols[7]).parent == where:
                listening = int(cols[3], 16) & 0x10000  # __SO_ACCEPTCON
                found[int(cols[6])] = "listening" if listening else "connected"
    return found


def listening_inodes(where: Path) -> list[int]:
    return sorted(i for i, state in unix_sockets(where).items() if state == "listening")


def loops_waiting_on(pid: int, inode: int) -> list[int]:
    """The epoll instances (event loops) that watch the socket `inode`."""
    return sorted(fd for fd, watched in epoll_sets(pid).items() if inode in watched)


def test_every_worker_accepts_on_a_unix_listener(start_mtlsd, make_upstream, pki, short_tmp):
    """workers: 2, a unix listener: both workers' event loops wait on its socket, and both take
    connections from it (the loops, told apart by the epoll set each accepted socket is in)."""
    up = make_upstream()
    path = short_tmp / "w.sock"
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="u", listen=f"unix:{path}")],
        workers=WORKERS, log={"access_log": False}, reload={"watch": False}))
    listening = listening_inodes(short_tmp)
    assert len(listening) == 1, listening
    loops = loops_waiting_on(daemon.pid, listening[0])
    assert len(loops) == WORKERS, (
        f"{len(loops)} of the {WORKERS} workers' event loops wait on the unix listener's socket "
        f"(epoll descriptors {loops}): the others never accept there")

    ctx = client_context(pki, "client")
    held = []

    def serving_loops() -> dict[int, int]:
        """For each worker's loop: how many of the connections accepted on `path` it holds."""
        accepted = {i for i, state in unix_sockets(short_tmp).items() if state == "connected"}
        sets = epoll_sets(daemon.pid)
        return {fd: len(sets.get(fd, set()) & accepted) for fd in loops}

    try:
        with ThreadPoolExecutor(BATCH) as pool:
            while True:
                held += pool.map(lambda _: open_tls(str(path), ctx), range(BATCH))
                counts = serving_loops()
                if all(counts.values()) or len(held) >= MAX_HELD:
                    break
        assert all(counts.values()), (
            f"of {len(held)} connections held, each worker's loop holds {counts}: one worker "
            f"took them all")
        assert sum(counts.values()) == len(held), (counts, len(held))
    finally:
        for s in held:
            s.close()
    ex = tls_exchange(str(path), ctx, b"ping\n", expect=5)
    assert ex.error is None and ex.data == b"ping\n", ex
    # A worker that loses the race for a connection finds the queue empty (EAGAIN) and waits
    # again: not an accept error.
    errors = [l for l in daemon.logs() if "accept" in l.get("msg", "")]
    assert not errors, errors


def test_a_unix_listener_taken_over_on_reload_is_every_workers(start_mtlsd, make_upstream, pki,
                                                              short_tmp):
    """A reload that binds a unix listener's path anew (spelt otherwise: bound beside it, then
    renamed over it) hands the new socket to every worker, and closes every worker's descriptor
    of the old one: nothing keeps it open, no loop still watches it."""
    up = make_upstream()
    path = short_tmp / "x.sock"
    daemon = start_mtlsd(daemon_config(
        [server_listener(pki, up.address, name="u", listen=f"unix:{path}")],
        workers=WORKERS, reload={"watch": False}))
    [old] = listening_inodes(short_tmp)
    line = reload_to(daemon, [server_listener(pki, up.address, name="u",
                                              listen=f"unix:{short_tmp}/./x.sock")])
    assert line["msg"] == RELOADED, line
    # The workers close their descriptors of the old socket when they run what the reload
    # posted them; until then it is still open.
    wait_until(lambda: listening_inodes(short_tmp) != [old] and old not in unix_sockets(short_tmp)
               and not loops_waiting_on(daemon.pid, old),
               timeout=10.0, what=lambda: f"the old socket {old} closed by every worker (loops "
                                          f"watching it: {loops_waiting_on(daemon.pid, old)})")
    [new] = listening_inodes(short_tmp)
    loops = loops_waiting_on(daemon.pid, new)
    assert len(loops) == WORKERS, (
        f"{len(loops)} of the {WORKERS} workers' event loops wait on the socket the reload bound")
    ex = tls_exchange(str(path), client_context(pki, "client"), b"ping\n", expect=5)
    assert ex.error is None and ex.data == b"ping\n", ex


def test_workers_zero_counts_the_cpus_of_the_affinity_mask(start_mtlsd, make_upstream, pki):
    """Under `taskset -c N` (a cpuset does the same) workers: 0 starts one worker, not one per CPU
    of the host."""
    cpu = min(os.sched_getaffinity(0))
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)], workers=0),
                         preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    ready = daemon.wait_for_log(lambda l: l.get("msg") == "ready")
    assert ready["workers"] == 1, ready
    counted = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("workers: 0"))
    assert counted["cpus_allowed"] == 1 and counted["workers"] == 1, counted
    assert counted["cpus_online"] == os.cpu_count(), counted
    ex = tls_exchange(daemon.addr(), client_context(pki, "client"), b"ping\n", expect=5)
    assert ex.error is None and ex.data == b"ping\n", ex
