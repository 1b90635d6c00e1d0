"""HTTP/2 clients in front of an h2c upstream that takes few streams at a time.

mtlsd submits each client stream's request to the upstream's nghttp2 session, which holds the
heads it cannot send yet (the upstream's SETTINGS_MAX_CONCURRENT_STREAMS) until a stream slot
frees; a request the client resets meanwhile stays there, marked cancelled. A review found that a
client could open large-headed streams behind a saturated upstream and reset them, batch after
batch, each batch adding ~6 MB to mtlsd for good. The heads held back by the upstream's limit are
now bounded per connection (1 MiB): past that a new stream is refused (REFUSED_STREAM, which a
client may retry), and the bound still holds after the client reset the streams queued behind it.
Heads below the limit are not charged: a burst to an upstream with room goes through whole."""

from __future__ import annotations

import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from h2_client import H2Client

TIMEOUT = 10.0
H2C = {"upstream_protocol": "h2c", "protocols": ["h2"]}
PAD = tuple((f"x-pad{i}", "a" * 3900) for i in range(15))  # a ~59 KB head
BATCH = 60


class H2cUpstream:
    """An h2c upstream taking `streams` streams at a time, answering each request at once
    (`answer`) or never; counts the requests it received."""

    def __init__(self, streams: int, answer: bool) -> None:
        self.streams, self.answer = streams, answer
        self.changed = threading.Condition()
        self.requests = 0

    def __call__(self, conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                 header_encoding="utf-8"))
        h.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20})
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        conn.sock.settimeout(60)
        try:
            while data := conn.recv():
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.changed:
                            self.requests += 1
                            self.changed.notify_all()
                        if self.answer:
                            h.send_headers(ev.stream_id, [(":status", "200")], end_stream=True)
                if out := h.data_to_send():
                    conn.sendall(out)
        except OSError:
            pass

    def wait_for_requests(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.requests >= n, TIMEOUT), self.requests


def refused(client: H2Client, sids: list[int]) -> set[int]:
    return {ev.stream_id for ev in client.events if isinstance(ev, h2.events.StreamReset)
            and ev.stream_id in sids and ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM}


def test_heads_queued_behind_a_saturated_h2c_upstream_are_bounded(serve, pki):
    upstream = H2cUpstream(streams=2, answer=False)
    daemon, _ = serve(upstream, http=H2C)
    client = H2Client(daemon, pki)
    try:
        for i in range(2):  # the upstream's two slots, held
            client.request(f"/held{i}", method="POST", end_stream=False)
        upstream.wait_for_requests(2)
        # ~17 heads of 59 KB fit the 1 MiB; the rest are refused at once.
        first = [client.request(f"/a{i}", extra=PAD, flush=False) for i in range(BATCH)]
        client.flush()
        client.wait_for(lambda ev: len(refused(client, first)) >= BATCH - 20, TIMEOUT)
        queued = [sid for sid in first if sid not in refused(client, first)]
        assert 10 <= len(queued) <= 20, len(queued)
        # Reset by the client, the queued ones stay held by nghttp2 (no slot frees): they still
        # count, so the next batch is refused whole rather than queued on top of them.
        for sid in queued:
            client.conn.reset_stream(sid)
        second = [client.request(f"/b{i}", extra=PAD, flush=False) for i in range(BATCH)]
        client.flush()
        client.wait_for(lambda ev: len(refused(client, second)) == BATCH, TIMEOUT)
    finally:
        client.close()
    assert upstream.requests == 2, upstream.requests  # nothing queued ever reached it
    assert daemon.running()


def test_a_burst_of_streams_to_an_h2c_upstream_with_room_is_not_refused(serve, pki):
    """Review of the bound: charging every head submitted, not only those the upstream's limit
    holds back, refused some of 300 gRPC-style streams (a 3.8 KB token HPACK sends as one
    index) opened in one write to an upstream with room for all of them."""
    daemon, _ = serve(H2cUpstream(streams=100_000, answer=True),
                      http={**H2C, "max_concurrent_streams": 1000})
    client = H2Client(daemon, pki)
    token = (("x-token", "Bearer " + "t" * 3800),)
    try:
        client.response(client.request("/warm", extra=token), TIMEOUT)  # HPACK indexes it
        sids = [client.request(f"/r{i}", extra=token, flush=False) for i in range(300)]
        client.flush()

        def ended() -> list:
            return [ev for ev in client.events if getattr(ev, "stream_id", None) in sids
                    and isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))]
        client.wait_for(lambda ev: len(ended()) >= len(sids), 20)
        resets = [ev for ev in ended() if isinstance(ev, h2.events.StreamReset)]
        assert resets == [], f"{len(resets)} of {len(sids)} refused"
    finally:
        client.close()

