"""HTTP/2 rapid reset (CVE-2023-44487) towards an h2c upstream, in `http:` mode.

README ("HTTP/2 and gRPC") says a stream the client resets within the read that brought it never
gets an HTTP/1.1 upstream connection; for `upstream_protocol: h2c` the same had only been
reasoned about. Here the client opens streams by the thousand, each a HEADERS (END_STREAM) at
once followed by RST_STREAM(CANCEL), and this checks what holds:

- none of those streams reaches the h2c upstream, not even as a reset: h2_connection.cpp
  start() submits the request to the upstream's nghttp2 client session, but nothing is written
  upstream before the read's frames are all processed (one thread per connection), and the
  RST_STREAM that follows in the same read (stream_closed -> h2_upstream.cpp cancel()) cancels
  the HEADERS still queued in that session (nghttp2_session_add_rst_stream drops a request
  HEADERS not yet sent). The paced tests write a hundred pairs at a time, one TLS record and so
  one of mtlsd's reads; the unpaced one writes them all at once, pairs straddling records;
- the resets are bounded per connection, as Envoy and nginx bound them since the CVE: at the
  200th premature reset (its response not begun, the stream younger than a second;
  `http.max_premature_resets`), once such resets outnumber the responses the upstream gave on
  the connection, mtlsd sends GOAWAY(ENHANCE_YOUR_CALM)
  naming the last stream taken, takes no stream after it (not even the rest of the read), stops
  reading and closes the connection, a stream still open with it; the access line says why
  (termination rate_limited) and mtlsd_connections_closed_total{reason="rate_limited"} counts it.
  Before, nghttp2's own limit (1000 resets, on by default only since nghttp2 1.57 and Debian's
  1.52.0-1+deb12u1) was the only bound, and its GOAWAY waited behind everything the socket
  held: a flood in one write had 300 to 700 more streams taken;
- mtlsd stays up, and a new connection through the same listener is served (200), the upstream
  seeing that request and only it.

The paced flood writes each batch with a PING and waits for its ACK: the ACK and any GOAWAY the
batch caused are queued by the same read, so they leave in the same write (no sleeps, exact
numbers). The client is raw frames over TLS (h2_frames.py): no client library sends a reset
flood. The upstream is hyper-h2 (python3-h2), recording the requests and resets it sees."""

from __future__ import annotations

import ssl
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from h2_client import H2Client
from h2_frames import (ACK, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM, SETTINGS,
                       Frame, _hpack_literal, connect_h2, frame, goaway_fields)
from mtlsd_harness import client_context, fmt_addr

TIMEOUT = 10.0
PING = 0x6
BATCH = 100             # pairs per write: 8.6 KB, within one TLS record, so one of mtlsd's reads
PACED_MAX = 3000        # the paced flood gives up (no limit) after this many streams
FLOOD = 20000           # the unpaced flood: 1.7 MB in one write
RAPID_RESET_FLOOR = 200  # http.max_premature_resets' default
CANCEL, ENHANCE_YOUR_CALM = 0x8, 0xB
H2C = {"upstream_protocol": "h2c", "protocols": ["h2"]}


class H2cUpstream:
    """An h2c upstream (hyper-h2) that answers every request with 200 "ok" once its body ended,
    and records per connection the requests ((stream id, path)) and resets it received."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.conns: list[dict] = []

    def handler(self):
        def handle(conn) -> None:
            seen = {"requests": [], "resets": [], "error": None, "closed": False}
            with self.changed:
                self.conns.append(seen)
                self.changed.notify_all()
            h = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=False, header_encoding="utf-8"))
            h.initiate_connection()
            try:
                conn.sendall(h.data_to_send())
                while data := conn.recv(65536):
                    for ev in h.receive_data(data):
                        if isinstance(ev, h2.events.RequestReceived):
                            self._record(seen["requests"],
                                         (ev.stream_id, dict(ev.headers)[":path"]))
                        elif isinstance(ev, h2.events.StreamReset):
                            self._record(seen["resets"], ev.stream_id)
                        elif isinstance(ev, h2.events.DataReceived):
                            h.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded):
                            h.send_headers(ev.stream_id, [(":status", "200")])
                            h.send_data(ev.stream_id, b"ok", end_stream=True)
                    conn.sendall(h.data_to_send())
            except (OSError, h2.exceptions.ProtocolError) as e:
                seen["error"] = repr(e)
            finally:
                with self.changed:
                    seen["closed"] = True
                    self.changed.notify_all()
        return handle

    def _record(self, into: list, item) -> None:
        with self.changed:
            into.append(item)
            self.changed.notify_all()

    def wait(self, what: str, predicate) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, TIMEOUT), f"the upstream: {what}"

    def connection(self, index: int) -> dict:
        self.wait(f"no connection #{index}", lambda: len(self.conns) > index)
        return self.conns[index]


def request_block(path: str, method: str = "GET") -> bytes:
    return b"".join(_hpack_literal(k, v) for k, v in (
        (":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path)))


FLOOD_BLOCK = request_block("/flood")


def opened_and_reset(stream: int) -> bytes:
    """A GET on `stream` (HEADERS, END_STREAM), at once followed by RST_STREAM(CANCEL)."""
    return (frame(HEADERS, END_STREAM | END_HEADERS, stream, FLOOD_BLOCK)
            + frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL)))


class FrameReader:
    """The frames mtlsd sends on a raw client connection (SETTINGS acknowledged as they come),
    read until a condition holds or the connection ends."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.buf = bytearray()
        self.frames: list[Frame] = []
        self.eof = False

    def _parse(self) -> None:
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags, stream = struct.unpack(">BBI", self.buf[3:9])
            self.frames.append(Frame(ftype, flags, stream & 0x7FFFFFFF,
                                     bytes(self.buf[9:9 + length])))
            del self.buf[:9 + length]
            if ftype == SETTINGS and not flags & ACK:
                try:
                    self.sock.sendall(frame(SETTINGS, ACK, 0, b""))
                except OSError:
                    pass

    def until(self, done, timeout: float = TIMEOUT) -> bool:
        """Reads until done() or the connection's end; whether done() came true."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:      # a reset: mtlsd closed with our frames unread
                data = b""
            if not data:
                self.eof = True
            self.buf += data
            self._parse()
        return True

    def until_eof(self) -> None:
        self.until(lambda: False)

    def goaway(self) -> Frame | None:
        return next((f for f in self.frames if f.type == GOAWAY), None)

    def pinged(self, opaque: int) -> bool:
        return any(f.type == PING and f.flags & ACK and f.payload == struct.pack(">Q", opaque)
                   for f in self.frames)


def paced_flood(client, reader: FrameReader, first: int) -> int:
    """Batches of BATCH opened-and-reset streams from stream `first` on, each write ending in a
    PING whose ACK (or a GOAWAY) is waited for, until a GOAWAY comes (or PACED_MAX streams);
    returns how many streams were sent."""
    sent = 0
    while reader.goaway() is None and sent < PACED_MAX:
        batch = b"".join(opened_and_reset(first + 2 * (sent + i)) for i in range(BATCH))
        sent += BATCH
        client.sock.sendall(batch + frame(PING, 0, 0, struct.pack(">Q", sent)))
        assert reader.until(lambda: reader.pinged(sent) or reader.goaway() is not None), \
            f"neither a PING ACK nor a GOAWAY after {sent} streams (eof: {reader.eof})"
    return sent


def flood_lines(daemon, local: str, streams: list[int]) -> list[dict]:
    """The flood's request lines, one per stream of `streams`. A burst of ~800-byte lines can
    fill the log's 128 KiB queue when its writer thread is starved (a loaded machine): lines
    dropped so are counted, never waited for, and a missing line must be one of those."""
    lines = [line for line in daemon.logs() if line.get("msg") == "request"
             and line.get("client") == local and line.get("path") == "/flood"]
    ids = sorted(line["stream_id"] for line in lines)
    assert set(ids) <= set(streams) and len(ids) == len(set(ids)), ids
    if len(ids) < len(streams):
        dropped = daemon.scrape().get("mtlsd_access_log_dropped_total")
        assert len(ids) + dropped >= len(streams), f"{len(ids)} lines, {dropped} dropped"
    return lines


def check_goaway(reader: FrameReader, first: int) -> int:
    """The GOAWAY is ENHANCE_YOUR_CALM and names the stream whose reset was the
    RAPID_RESET_FLOOR-th (streams from `first` on, odd ids); returns its last-stream-id."""
    goaway = reader.goaway()
    assert goaway is not None, "no GOAWAY: no limit on resets per connection"
    last, code = goaway_fields(goaway)
    assert code == ENHANCE_YOUR_CALM, (last, code)
    assert last == first + 2 * (RAPID_RESET_FLOOR - 1), last
    return last


def assert_a_new_connection_is_served(daemon, pki, upstream: H2cUpstream) -> None:
    """mtlsd is up, and a new connection through the listener gets its 200, the upstream
    seeing that request (on its second connection) and only it."""
    assert daemon.running()
    fresh = H2Client(daemon, pki)
    try:
        sid = fresh.request("/after")
        assert fresh.response(sid, TIMEOUT) == (200, b"ok")
    finally:
        fresh.close()
    assert upstream.connection(1)["requests"] == [(1, "/after")]
    assert len(upstream.conns) == 2 and daemon.running()


def assert_closed_for_rapid_reset(daemon, access: dict) -> None:
    """The connection's access line names the rapid reset (termination rate_limited, not an
    error of mtlsd's), and mtlsd_connections_closed_total{reason="rate_limited"} counted it."""
    assert access.get("result") == "accepted", access
    assert access.get("termination") == "rate_limited", access
    assert "(rapid reset)" in access.get("detail", ""), access
    assert daemon.scrape().get("mtlsd_connections_closed_total", listener="inbound",
                               reason="rate_limited") == 1
    assert daemon.scrape().total("mtlsd_connections_total", listener="inbound",
                                 result="error") == 0


def test_paced_rapid_reset_never_reaches_the_h2c_upstream_and_ends_in_goaway(serve, pki):
    """Batch after batch of opened-and-reset streams: mtlsd takes each (a request line with
    status 0, "stream reset: CANCEL"), the upstream sees none, and the batch that holds the
    RAPID_RESET_FLOOR-th reset is answered with GOAWAY(ENHANCE_YOUR_CALM) and the connection's
    end.
    Then a new connection gets its 200."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    reader = FrameReader(client.sock)
    flood_up = upstream.connection(0)   # opened with the client's connection
    started = time.monotonic()
    try:
        sent = paced_flood(client, reader, 1)
        elapsed = time.monotonic() - started
        reader.until_eof()
    finally:
        client.sock.close()

    last = check_goaway(reader, 1)
    assert sent == BATCH * -(-((last + 1) // 2) // BATCH), \
        f"the GOAWAY came after {sent} streams, not with the batch holding stream {last}"
    assert reader.eof, "mtlsd kept the connection open after its GOAWAY"
    tail = reader.frames[reader.frames.index(reader.goaway()) + 1:]
    assert tail == [], f"frames after the GOAWAY: {tail}"

    assert_closed_for_rapid_reset(daemon, daemon.wait_for_access(client=local))
    lines = flood_lines(daemon, local, list(range(1, 2 * sent, 2)))
    assert {(line["status"], line["detail"]) for line in lines} == {(0, "stream reset: CANCEL")}

    upstream.wait("the flood's connection stays open", lambda: flood_up["closed"])
    assert flood_up["requests"] == [], (
        f"{len(flood_up['requests'])} of {sent} reset streams reached the h2c upstream: "
        f"{flood_up['requests'][:5]}")
    assert flood_up["resets"] == [], flood_up["resets"][:5]
    assert flood_up["error"] is None, flood_up["error"]

    assert_a_new_connection_is_served(daemon, pki, upstream)
    print(f"\npaced: {sent} streams sent and taken in {elapsed:.2f}s, GOAWAY(ENHANCE_YOUR_CALM) "
          f"last_stream_id={last} with the batch that held it; the upstream saw "
          f"{len(flood_up['requests'])} requests, {len(flood_up['resets'])} resets")


def test_a_connection_closed_for_rapid_reset_ends_its_open_streams(serve, pki):
    """A POST held open on stream 1 (the upstream has its head), then the paced flood: the
    GOAWAY names the stream of the RAPID_RESET_FLOOR-th reset, and the connection ends with
    stream 1 unanswered (an abusive connection is not kept open for its other streams; nginx
    closes it too). Stream 1's request line says so; the upstream saw only /held."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    reader = FrameReader(client.sock)
    up = upstream.connection(0)
    try:
        client.sock.sendall(frame(HEADERS, END_HEADERS, 1, request_block("/held", "POST")))
        upstream.wait("never got /held", lambda: up["requests"] == [(1, "/held")])
        sent = paced_flood(client, reader, 3)
        last = check_goaway(reader, 3)
        reader.until_eof()
    finally:
        client.sock.close()

    assert reader.eof, "the connection stayed open after its GOAWAY"
    mine = [f for f in reader.frames if f.stream == 1 and f.type in (HEADERS, DATA)]
    assert mine == [], f"stream 1 was answered: {mine}"
    assert_closed_for_rapid_reset(daemon, daemon.wait_for_access(client=local))
    held = [x for x in daemon.logs() if x.get("msg") == "request" and x.get("path") == "/held"]
    assert [(x["status"], x["stream_id"], x["detail"]) for x in held] == \
        [(0, 1, "connection closed")], held
    flood_lines(daemon, local, list(range(3, 3 + 2 * RAPID_RESET_FLOOR, 2)))
    upstream.wait("the connection stays open", lambda: up["closed"])
    assert up["requests"] == [(1, "/held")], up
    assert daemon.running()
    print(f"\nheld: GOAWAY last_stream_id={last} after {sent} streams; stream 1 unanswered")


def test_an_unpaced_flood_in_one_write_is_cut_short_and_kept_from_the_upstream(serve, pki):
    """FLOOD opened-and-reset streams in one 1.7 MB write, pairs straddling TLS records: mtlsd
    takes RAPID_RESET_FLOOR of them and no more (not the rest of the read that held the last),
    stops reading and closes (the client's unread frames make that a reset, which may arrive
    before the GOAWAY is read). The upstream sees at most a pair cut by a read that emptied the
    socket (none in practice), mtlsd stays up and serves a new connection."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    reader = FrameReader(client.sock)
    flood_up = upstream.connection(0)
    flood = b"".join(opened_and_reset(1 + 2 * i) for i in range(FLOOD))
    try:
        try:
            client.sock.sendall(flood)
        except OSError:
            pass                 # mtlsd closed while the flood was still going out
        reader.until_eof()
    finally:
        client.sock.close()
    assert reader.eof, "the flood's connection stayed open"

    access = daemon.wait_for_access(client=local)
    assert_closed_for_rapid_reset(daemon, access)
    taken = flood_lines(daemon, local, list(range(1, 2 * RAPID_RESET_FLOOR, 2)))
    assert access["rx_bytes"] < len(flood), access["rx_bytes"]
    upstream.wait("the flood's connection stays open", lambda: flood_up["closed"])
    leaked = flood_up["requests"]
    assert len(leaked) <= RAPID_RESET_FLOOR // 100, \
        f"{len(leaked)} of {RAPID_RESET_FLOOR} reached upstream"
    assert {sid for sid, _ in leaked} <= set(flood_up["resets"]), "a leaked stream not reset"

    assert_a_new_connection_is_served(daemon, pki, upstream)
    goaway = reader.goaway()
    print(f"\nunpaced: {FLOOD} streams written, {len(taken)} taken ({access['rx_bytes']} bytes "
          f"read), GOAWAY {goaway_fields(goaway) if goaway else 'not read'}; the upstream saw "
          f"{len(leaked)} requests; access line termination {access.get('termination')!r} "
          f"detail {access.get('detail')!r}")


# --- what the bound spares, and what does not get around it --------------------------------------

def local_400(stream: int) -> bytes:
    """A request mtlsd answers itself (400: :scheme is neither http nor https), at no cost to
    the client and none to the upstream."""
    block = b"".join(_hpack_literal(k, v) for k, v in (
        (":method", "GET"), (":scheme", "ftp"), (":authority", "localhost"), (":path", "/x")))
    return frame(HEADERS, END_STREAM | END_HEADERS, stream, block)


def answered(reader: FrameReader, streams: list[int]) -> bool:
    ended = {f.stream for f in reader.frames if f.flags & END_STREAM and f.type in (HEADERS, DATA)}
    return set(streams) <= ended


def complete(client, reader: FrameReader, streams: list[int], request) -> None:
    """Sends request(stream) for each of `streams` in one write, and waits for every response."""
    client.sock.sendall(b"".join(request(sid) for sid in streams))
    assert reader.until(lambda: answered(reader, streams)), \
        f"not all of {len(streams)} requests answered (eof: {reader.eof})"


def test_a_client_whose_upstream_answers_outnumber_its_cancellations_is_spared(serve, pki):
    """250 requests the upstream answers, then premature resets: the 200th does not close the
    connection (200 <= 250), the 251st does (GOAWAY naming its stream), and the access line
    says how many the upstream answered."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    local = fmt_addr(client.sock.getsockname())
    reader = FrameReader(client.sock)
    try:
        for first in range(1, 500, 100):   # 5 writes of 50 GETs: streams 1 .. 499
            complete(client, reader, list(range(first, first + 100, 2)),
                     lambda sid: frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                       request_block("/ok")))
        sent = paced_flood(client, reader, 501)
        reader.until_eof()
    finally:
        client.sock.close()
    last, code = goaway_fields(reader.goaway())
    assert code == ENHANCE_YOUR_CALM and last == 501 + 2 * 250, (last, code)
    assert sent == 300, sent
    access = daemon.wait_for_access(client=local)
    assert_closed_for_rapid_reset(daemon, access)
    assert "the upstream answered 250" in access["detail"], access


def test_requests_mtlsd_answers_itself_do_not_get_around_the_bound(serve, pki):
    """Each reset paired with a request mtlsd answers itself (a 400, free for the client):
    those are no upstream responses, so the 200th premature reset still closes the
    connection."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http=H2C)
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    reader = FrameReader(client.sock)
    try:
        sid = 1
        while reader.goaway() is None and sid < 4 * PACED_MAX:
            pairs = range(sid, sid + 2 * BATCH, 4)  # 50 (local 400, reset) pairs in one write
            client.sock.sendall(b"".join(local_400(b) + opened_and_reset(b + 2) for b in pairs)
                                + frame(PING, 0, 0, struct.pack(">Q", sid)))
            mark = sid
            assert reader.until(lambda: reader.pinged(mark) or reader.goaway() is not None)
            sid += 2 * BATCH
        reader.until_eof()
    finally:
        client.sock.close()
    last, code = goaway_fields(reader.goaway())
    # The 200th reset: in the 4th write, its 50th pair's second stream.
    assert code == ENHANCE_YOUR_CALM and last == 3 * 2 * BATCH + 1 + 49 * 4 + 2, (last, code)
    assert upstream.connection(0)["requests"] == []


def test_max_premature_resets_0_leaves_the_bound_to_nghttp2(serve, pki):
    """http.max_premature_resets: 0: 300 premature resets close nothing (nghttp2's own limit,
    1,000, is the only one), and the connection still serves a request."""
    upstream = H2cUpstream()
    daemon, _ = serve(upstream.handler(), http={**H2C, "max_premature_resets": 0})
    client = connect_h2(client_context(pki, "client"), *daemon.addr(), TIMEOUT)
    reader = FrameReader(client.sock)
    try:
        for first in range(1, 600, 2 * BATCH):
            client.sock.sendall(b"".join(opened_and_reset(first + 2 * i) for i in range(BATCH))
                                + frame(PING, 0, 0, struct.pack(">Q", first)))
            assert reader.until(lambda: reader.pinged(first)), f"no PING ACK (eof: {reader.eof})"
        assert reader.goaway() is None
        complete(client, reader, [601], lambda sid: frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                                          request_block("/still")))
    finally:
        client.sock.close()
    assert [path for _, path in upstream.connection(0)["requests"]] == ["/still"]
