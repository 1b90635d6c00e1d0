"""Clients that pipeline scrapes and never read what they asked for (a review's finding): each
answer was written as soon as the kernel took the previous one, and loopback send buffers grow
to 4 MB, so 64 such connections had mtlsd serialize /metrics thousands of times and queue
132 MB. A small send buffer on admin connections bounds what each one holds: measured here in
the kernel's own figures (the send queues of mtlsd's admin sockets), not in time."""

from __future__ import annotations

import socket
import time

from mtlsd_harness import parse_address

CLIENTS = 32
REQUESTS_EACH = 400
# Per connection: the 64 KiB send buffer asked for, doubled by the kernel for its bookkeeping,
# with room to spare; the unbounded server queued ~1 MB on each (up to the 4 MB autotuning cap).
SEND_QUEUE_LIMIT_EACH = 256 * 1024
# Samples of the send queues in a row that must show nothing moving: every answer that could go
# out has (the clients never read, so nothing moves again until the 10 s deadline).
STILL_SAMPLES = 10


def send_queues(port: int) -> dict[str, int]:
    """The send queue (bytes) of each established TCP socket on 127.0.0.1:`port`, by the peer's
    address: the admin server's side of its connections (/proc/net/tcp, as `ss -tn` shows in
    Send-Q)."""
    local = f"0100007F:{port:04X}"
    queues = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[3] == "01":
                queues[fields[2]] = int(fields[4].split(":")[0], 16)
    return queues


def test_pipelined_scrapes_nobody_reads_queue_a_bounded_amount(serve):
    daemon, _ = serve()
    host, port = parse_address(daemon.admin_address)
    assert host == "127.0.0.1"
    pipelined = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * REQUESTS_EACH
    clients = []
    try:
        for _ in range(CLIENTS):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(pipelined)
            clients.append(s)
        deadline = time.monotonic() + 20
        last, still = None, 0
        stalled = {}  # each connection's largest send queue seen
        while still < STILL_SAMPLES:
            queues = send_queues(port)
            total = sum(queues.values())
            # Checked at every sample: the unbounded server passes the limit on its way up.
            assert total <= CLIENTS * SEND_QUEUE_LIMIT_EACH, (
                f"{len(queues)} admin connections queue {total} bytes "
                f"(max {max(queues.values())})")
            for peer, queued in queues.items():
                stalled[peer] = max(stalled.get(peer, 0), queued)
            if last and not queues:
                break  # the 10 s write deadline closed them (a slow, loaded run) before all settled
            still = still + 1 if queues == last else 0
            last = queues
            assert time.monotonic() < deadline, f"the send queues never settled: {queues}"
            time.sleep(0.05)
        # Every client's answers backed up in its socket (what the bound is for), whether or not
        # all were stalled at the same moment (CI: on a loaded machine the first reached their
        # write deadline before the last had filled).
        assert len(stalled) == CLIENTS and all(stalled.values()), (
            f"not every client stalled: {stalled}")
        total = sum(stalled.values())
        print(f"{CLIENTS} connections queued {total} bytes, at most {max(stalled.values())} each")
        # mtlsd is not busy serializing answers for them: a probe is served.
        assert daemon.admin_request("/healthz").status == 200
    finally:
        for s in clients:
            s.close()
