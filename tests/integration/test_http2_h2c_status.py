"""An h2c upstream answering with a status below 100 or above 599.

nghttp2 checks that `:status` has three digits and holds back 1xx heads; `000`-`099` it takes
for a final head, which mtlsd's h2c side took for an interim one and never passed on: the
client's stream stayed unanswered until `http.stream_idle_timeout` (found by h2_upstream_fuzz).
Such a head is no response (RFC 9110 15): the upstream's stream is reset and the client gets a
502 at once, as for a head over the limit. `600`-`999` went through to the client: a 502 too,
as from an HTTP/1.1 upstream."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from h2_client import H2Client

TIMEOUT = 10.0
H2C = {"upstream_protocol": "h2c", "protocols": ["h2"], "stream_idle_timeout": "60s"}


def answering(status: str, body: bytes = b"hello", seen: list | None = None,
              header_list_limit: int | None = None):
    """An h2c upstream answering every request with `status` and `body`; each request's fields
    go to `seen` when given; `header_list_limit` raises hpack's own 64 KiB."""
    def upstream(conn) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_outbound_headers=False))
        if header_list_limit:
            h.decoder.max_header_list_size = header_list_limit
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        try:
            while data := conn.recv():
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        if seen is not None:
                            seen.append(dict(ev.headers))
                        h.send_headers(ev.stream_id, [(":status", status)])
                        h.send_data(ev.stream_id, body, end_stream=True)
                if out := h.data_to_send():
                    conn.sendall(out)
        except OSError:
            pass
    return upstream


@pytest.mark.parametrize("status", ["099", "000", "600", "999"])
def test_a_status_outside_100_to_599_from_an_h2c_upstream_is_a_502_at_once(serve, pki, status):
    daemon, _ = serve(answering(status), http=H2C)
    client = H2Client(daemon, pki)
    try:
        assert client.response(client.request("/"), TIMEOUT) == (502, b"Bad Gateway\n")
    finally:
        client.close()
    line = daemon.wait_for_log(lambda l: l.get("msg") == "request" and l.get("path") == "/")
    assert line["status"] == 502, line
    assert f"response status {status} is not a status" in line["detail"], line


def test_a_status_of_200_from_the_same_upstream_goes_through(serve, pki):
    daemon, _ = serve(answering("200"), http=H2C)
    client = H2Client(daemon, pki)
    try:
        assert client.response(client.request("/"), TIMEOUT) == (200, b"hello")
    finally:
        client.close()
