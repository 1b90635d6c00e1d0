"""HTTP/2 clients that send faster than mtlsd can answer them, in `http:` mode (a review's
findings, each test failing before the fix):

- a client that floods GET HEADERS (each a stream nghttp2 answers, most with
  RST_STREAM(REFUSED_STREAM) past max_concurrent_streams) and reads nothing kept the socket full:
  every read completed at once, so the connection's reader never let its worker go (with
  `workers: 1` another client's request waited as long as the flood went on), never let its own
  writer run (so every read counted as activity and timeouts.idle never came), and nghttp2 queued
  an answer per stream without bound (700 MB in 6 s). Now the reader yields after 8 reads that
  did not wait, and stops reading while a write to the client waits and nghttp2 holds 256
  frames or more;
- the same reader held its worker through a flood of empty DATA frames (no memory growth);
- HPACK lets one byte name a 4,000-byte field of the table: a few KB of frames (8 streams
  holding the upstream places, 92 more queued behind them with a 64 KB head and 64 KB of
  trailers each) held 12 MiB per connection. Now a connection's open streams hold at most
  256 KiB of decoded request fields: a stream past it is refused with
  RST_STREAM(REFUSED_STREAM), trailers past it are reset.

Each flood is bounded in time and written by a thread of its own (a TLS client over MemoryBIO,
non-blocking), its frames built in bulk so that it outpaces mtlsd (a Python loop over frames
does not), in sends of SEND_PIECE. Before the fix the reader let others run only when it found
its socket empty, which even such a client allows now and then, depending on how far the
kernel grew mtlsd's receive buffer: one client alone starved the old binary in 5 runs of 8
with GETs and 4 of 5 with empty DATA (1 of 5 with sends of a megabyte); FLOODS at once, in
every run (16 of 16)."""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
import threading
import time
from array import array

import hpack

from faults import SANITIZED, rss_kib
from h2_client import H2Client
from h2_frames import (DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, RST_STREAM, SETTINGS,
                       _hpack_literal, connect_h2, frame)
from helpers import wait_until
from mtlsd_harness import client_context, fmt_addr, open_tls
from test_http2_limits import hpack_int
from test_http2_rapid_reset import FrameReader

TIMEOUT = 10.0
SEND_PIECE = 64 * 1024         # a flood's bytes per send()
PING = 0x6
CANCEL, REFUSED_STREAM = 0x8, 0x7
MiB = 1024                     # rss_kib is in KiB
FLOOD_SECONDS = 8.0            # before: another client waited to the floods' end (or failed)
ANSWER_BOUND = 4.0             # after: at most 0.6 s, two more processes spinning on 2 cores
FLOODS = 3                     # clients flooding at once (module docstring)
FLOOD_RSS_MIB = 64             # before: +0.9 to 1.4 GB; after: +5 MiB
IDLE = 2.0
CLOSE_BOUND = IDLE + 5.0       # from the flood's start; after: 2.5 to 2.8 s (buffers fill first)
CONNECTIONS = 10
PER_CONNECTION_MIB = 3         # before: 12.1 MiB per connection; after: 0.7


def request_block(method: str, path: str) -> bytes:
    return b"".join(_hpack_literal(k, v) for k, v in (
        (":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path)))


def answer_each_head(conn) -> None:
    """An HTTP/1.1 upstream that answers every GET head at once (200 "ok", kept alive) and
    holds every other request, reading on: a POST's body never ends, so it keeps its place.
    Nothing is recorded (a flood sends it requests by the thousand)."""
    buf = b""
    try:
        while data := conn.sock.recv(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                if head.startswith(b"GET "):
                    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass


class Flood:
    """An HTTP/2 client that, once start()ed, writes what batch() returns as fast as the socket
    takes it and never reads, in a thread of its own, for at most `seconds`. `ended` is when a
    write failed: mtlsd closed the connection (with our bytes unread, so a reset)."""

    def __init__(self, daemon, pki, opening: bytes, batch, seconds: float):
        ctx = client_context(pki, "client")
        ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_connection(daemon.addr(), timeout=TIMEOUT)
        self.local = fmt_addr(self.sock.getsockname())
        incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("EOF in the handshake")
                incoming.write(data)
        self.sock.sendall(self.outgoing.read())
        assert self.tls.selected_alpn_protocol() == "h2"
        self.sock.setblocking(False)
        self.pending = bytearray()
        self.sent = 0                      # TLS bytes the socket took
        self.ended: float | None = None
        self.stop = threading.Event()
        self._queue(PREFACE + frame(SETTINGS, 0, 0, b"") + opening)
        self.seconds = seconds
        self.thread = threading.Thread(target=self._run, args=(batch,), daemon=True)

    def start(self) -> "Flood":
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _queue(self, plain: bytes) -> None:
        self.tls.write(plain)
        self.pending += self.outgoing.read()

    def _run(self, batch) -> None:
        while not self.stop.is_set() and time.monotonic() < self.started + self.seconds:
            if len(self.pending) < 1 << 20:
                self._queue(batch())
            _, writable, _ = select.select([], [self.sock], [], 0.05)
            if not writable:
                continue
            try:
                with memoryview(self.pending) as view:   # a bytearray slice would copy
                    n = self.sock.send(view[:SEND_PIECE])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self.ended = time.monotonic()
                return
            del self.pending[:n]
            self.sent += n

    def running(self) -> bool:
        return self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join(TIMEOUT)
        self.sock.close()


GET_FRAME = frame(HEADERS, END_STREAM | END_HEADERS, 0,
                  b"\x82\x87\x84\x01\x09localhost")  # GET https / (static table), :authority
GETS_PER_BATCH = 4000


def get_flood():
    """(opening, batch): GETs on streams 1, 3, 5, ..., 4,000 a batch, written with the stream
    ids spliced in by slices (some 5 million frames a second, where one frame() per stream
    makes fewer than mtlsd reads)."""
    size, first = len(GET_FRAME), [1]

    def batch() -> bytes:
        ids = array("I", range(first[0], first[0] + 2 * GETS_PER_BATCH, 2))
        first[0] += 2 * GETS_PER_BATCH
        if sys.byteorder == "little":
            ids.byteswap()
        raw, out = ids.tobytes(), bytearray(GET_FRAME * GETS_PER_BATCH)
        for k in range(4):                  # the stream id: bytes 5..8 of every frame
            out[5 + k::size] = raw[k::4]
        return bytes(out)
    return b"", batch


def empty_data_flood():
    """(opening, batch): a POST on stream 1 (its upload never ends), then empty DATA frames on
    it, which take neither a flow-control window nor an answer."""
    empty = frame(DATA, 0, 1, b"") * 20000
    return frame(HEADERS, END_HEADERS, 1, request_block("POST", "/upload")), lambda: empty


def probe_h2(daemon, pki) -> None:
    client = H2Client(daemon, pki)
    try:
        sid = client.request("/probe-h2")
        assert client.response(sid, TIMEOUT) == (200, b"ok")
    finally:
        client.close()


def probe_h1(daemon, pki) -> None:
    ctx = client_context(pki, "client")
    ctx.set_alpn_protocols(["http/1.1"])
    with open_tls(daemon.addr(), ctx, TIMEOUT) as sock:
        sock.sendall(b"GET /probe-h1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\nok") and (chunk := sock.recv(65536)):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def answer_times(daemon, pki, flood: Flood) -> list[tuple[str, float, float, str]]:
    """While the flood lasts, another client's requests one after another (each on a connection
    of its own: handshake, request, answer), over HTTP/2 and HTTP/1.1 in turn: (protocol, start
    in the flood, seconds to the answer or the failure, the failure or "") for each."""
    out = []
    while not out or flood.running():
        for name, probe in (("h2", probe_h2), ("http/1.1", probe_h1)):
            start, failure = time.monotonic(), ""
            try:
                probe(daemon, pki)
            except (AssertionError, OSError) as e:   # e.g. no answer within TIMEOUT
                failure = repr(e)[:200]
            out.append((name, start - flood.started, time.monotonic() - start, failure))
    return out


def flood_with_another_client(serve, pki, make_flood, what: str) -> tuple[int, int]:
    """`workers: 1` (one thread serves every connection): FLOODS clients flooding for
    FLOOD_SECONDS, and meanwhile another client's requests, each answered within ANSWER_BOUND
    (asserted). Returns mtlsd's RSS before and at the floods' end (their connections still
    open), in KiB."""
    daemon, _ = serve(answer_each_head, http={}, top={"workers": 1})
    probe_h2(daemon, pki)                  # the first connection's costs, before the baseline
    before = rss_kib(daemon.pid)
    clients = []
    try:
        clients += [Flood(daemon, pki, *make_flood(), FLOOD_SECONDS) for _ in range(FLOODS)]
        for flood in clients:              # all connected first: a flood may hold the worker
            flood.start()
        times = answer_times(daemon, pki, clients[0])
        for flood in clients:
            flood.thread.join(TIMEOUT)
        after = rss_kib(daemon.pid)
    finally:
        for flood in clients:
            flood.close()
    sent = sum(flood.sent for flood in clients) >> 20
    slowest = max(times, key=lambda t: t[2])
    print(f"\n{what}: {sent} MiB written in {FLOOD_SECONDS:.0f} s; {len(times)} requests of "
          f"another client, slowest {slowest[2]:.3f} s ({slowest[0]}, at {slowest[1]:.2f} s); "
          f"RSS {before // MiB} -> {after // MiB} MiB")
    assert daemon.running()
    assert sent >= 4, "the floods never got going"
    assert slowest[2] < ANSWER_BOUND, f"another client waited {slowest[2]:.2f} s: {slowest}"
    assert not [t for t in times if t[3]], [t for t in times if t[3]]
    return before, after


def test_get_floods_that_read_nothing_neither_starve_the_worker_nor_grow_memory(serve, pki):
    """FLOODS clients write GETs for FLOOD_SECONDS and read nothing; with `workers: 1` another
    client's requests (a new connection each, HTTP/2 and HTTP/1.1 in turn) are answered within
    ANSWER_BOUND all along, and mtlsd's RSS grows by less than FLOOD_RSS_MIB (what it queues
    for a client whose writes wait stays within the backpressure's bound). Before: a request
    waited for the floods' end (or failed), and RSS grew by about 1 GB."""
    before, after = flood_with_another_client(serve, pki, get_flood, "GET floods")
    if not SANITIZED:
        assert after - before < FLOOD_RSS_MIB * MiB, f"mtlsd grew by {(after - before) // MiB} MiB"


def test_empty_data_floods_do_not_starve_the_worker(serve, pki):
    """The same with empty DATA frames on an open upload (nothing to answer, no memory to
    grow): another client's requests are answered within ANSWER_BOUND all along. Before: a
    request waited for the floods' end."""
    flood_with_another_client(serve, pki, empty_data_flood, "empty DATA floods")


def test_a_get_flood_that_reads_nothing_meets_the_idle_timeout(serve, pki):
    """A client writes GETs and never reads, with `timeouts.idle: 2s`: once mtlsd's writes to
    it wait, it stops reading, so nothing counts as activity and the connection is closed at
    the idle timeout (access line termination idle_timeout, within CLOSE_BOUND of the flood's
    start; the flood's next write fails). Before: each read counted as activity (the writer,
    starved by the reader, never got to wait), the connection stayed open as long as the flood
    went on, and RSS grew by 200 MB a second."""
    daemon, _ = serve(answer_each_head, http={}, timeouts={"idle": f"{IDLE:.0f}s"})
    flood = Flood(daemon, pki, *get_flood(), 2 * CLOSE_BOUND).start()
    try:
        try:
            line = daemon.wait_for_access(client=flood.local, timeout=CLOSE_BOUND)
        except AssertionError:
            raise AssertionError(f"the flood's connection still open after {CLOSE_BOUND} s "
                                 f"(timeouts.idle {IDLE} s); RSS {rss_kib(daemon.pid) // MiB} "
                                 f"MiB") from None
        closed = time.monotonic() - flood.started
        wait_until(lambda: flood.ended or not flood.running(), TIMEOUT, "the flood's end")
    finally:
        flood.close()
    failed = f"{flood.ended - flood.started:.2f} s" if flood.ended else "never"
    print(f"\nidle: closed at {closed:.2f} s ({line['duration_ms']} ms), {line['rx_bytes'] >> 20} "
          f"MiB read, {line['tx_bytes'] >> 20} MiB written; the flood's write failed: {failed}")
    assert line["termination"] == "idle_timeout", line
    assert flood.ended is not None, "the flood wrote on to its deadline"


# --- HPACK: a few KB that decode to megabytes ----------------------------------------------

POST = request_block("POST", "/held")
# A 4,000-byte field added to the table (literal with incremental indexing); then 0xbe, one
# byte, names it (dynamic index 62, the newest entry): 4,035 bytes by RFC 9113's count.
BIG_FIELD = b"\x40" + hpack_int(3, 7, 0) + b"x-a" + hpack_int(4000, 7, 0) + b"v" * 4000
SIXTEEN = b"\xbe" * 16         # 16 references: 64.6 KB decoded, under the 64 KiB header list
QUEUED = range(17, 201, 2)     # with the 8 places' streams, max_concurrent_streams (100)


def hold_places() -> bytes:
    """Streams 1 to 15: POSTs whose uploads never end, holding the 8 upstream places
    (http.max_upstream_connections_per_client) so the streams after them queue; stream 1's
    head puts BIG_FIELD in the table."""
    return frame(HEADERS, END_HEADERS, 1, POST + BIG_FIELD) + b"".join(
        frame(HEADERS, END_HEADERS, sid, POST) for sid in range(3, 17, 2))


def ping(opaque: int) -> bytes:
    """A PING: its ACK comes once mtlsd processed everything written before it."""
    return frame(PING, 0, 0, struct.pack(">Q", opaque))


def resets(reader: FrameReader) -> dict[int, int]:
    return {f.stream: int.from_bytes(f.payload[:4], "big")
            for f in reader.frames if f.type == RST_STREAM}


def test_hpack_references_hold_bounded_memory_per_connection(serve, pki):
    """CONNECTIONS clients each hold the 8 places, then queue 92 streams of 64.7 KB of head and
    64.6 KB of trailers, each block 16 bytes (15 KB of frames a connection). Once every
    connection's PING is answered (all of it processed), mtlsd has grown by less than
    PER_CONNECTION_MIB a connection, and most queued streams were refused (REFUSED_STREAM).
    Before: 12.1 MiB a connection, every stream kept."""
    daemon, _ = serve(answer_each_head, http={})
    queued = b"".join(frame(HEADERS, END_HEADERS, sid, POST + SIXTEEN)
                      + frame(HEADERS, END_HEADERS | END_STREAM, sid, SIXTEEN) for sid in QUEUED)
    before = rss_kib(daemon.pid)
    clients = []
    try:
        for _ in range(CONNECTIONS):
            client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
            clients.append((client, FrameReader(client.sock)))
            client.sock.sendall(hold_places() + queued + ping(1))
        for _, reader in clients:
            assert reader.until(lambda: reader.pinged(1)), f"no PING ACK (eof: {reader.eof})"
        grown = rss_kib(daemon.pid) - before
        refused = [sum(code == REFUSED_STREAM for code in resets(r).values()) for _, r in clients]
    finally:
        for client, _ in clients:
            client.sock.close()
    print(f"\nHPACK: {CONNECTIONS} connections, {len(hold_places() + queued)} bytes of frames "
          f"each: RSS +{grown / MiB:.1f} MiB ({grown / MiB / CONNECTIONS:.2f} MiB a connection);"
          f" queued streams refused: {refused}")
    assert all(n >= len(QUEUED) - 8 for n in refused), \
        f"of {len(QUEUED)} queued streams, refused per connection: {refused}"
    if not SANITIZED:
        assert grown < CONNECTIONS * PER_CONNECTION_MIB * MiB, \
            f"{grown / MiB / CONNECTIONS:.1f} MiB per connection"


def test_a_stream_past_the_fields_budget_is_refused_and_the_connection_goes_on(serve, pki):
    """The 8 places held (some 5.5 KB of fields), then heads alone (64.7 KB each, no trailers)
    on streams 17 to 31: the first three fit the connection's 256 KiB (199.7 KB in all), the
    fourth (264.4 KB) and every one after it is refused with RST_STREAM(REFUSED_STREAM), the
    others untouched. The client then cancels its open streams, which frees their fields and
    places, and a GET on the same connection gets its 200. Before: nothing was refused."""
    daemon, _ = serve(answer_each_head, http={})
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    reader = FrameReader(client.sock)
    heads = list(range(17, 33, 2))
    try:
        client.sock.sendall(hold_places() + b"".join(
            frame(HEADERS, END_HEADERS, sid, POST + SIXTEEN) for sid in heads) + ping(1))
        assert reader.until(lambda: reader.pinged(1)), f"no PING ACK (eof: {reader.eof})"
        refused = resets(reader)
        open_streams = [sid for sid in range(1, 33, 2) if sid not in refused]
        client.sock.sendall(b"".join(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
                                     for sid in open_streams)
                            + frame(HEADERS, END_STREAM | END_HEADERS, 33,
                                    request_block("GET", "/after")))
        assert reader.until(lambda: any(f.stream == 33 and f.flags & END_STREAM
                                        for f in reader.frames)), f"no answer (eof {reader.eof})"
        answer = [(f.type, f.payload) for f in reader.frames if f.stream == 33]
    finally:
        client.sock.close()
    print(f"\nbudget: resets {sorted(refused.items())}; stream 33: {answer}")
    assert refused == {sid: REFUSED_STREAM for sid in heads[3:]}, sorted(refused.items())
    assert answer[0][0] == HEADERS, answer
    assert dict(hpack.Decoder().decode(answer[0][1]))[":status"] == "200", answer
    assert answer[-1] == (DATA, b"ok"), answer
