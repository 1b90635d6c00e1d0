"""HTTP mode's "request" lines (one per request) take their connection's fields from a rendering
made once per connection (issue 13: rendering them on every request cost a third of a request's
instructions). A connection's lines must still be those the fields rendered anew would make when
what the rendering depends on changes while it is open: log.format, on a reload.

Each test holds one connection across two reloads (json -> text -> json) and compares the
connection's fields on its three request lines.
"""

from __future__ import annotations

import re
import signal

import pytest

from helpers import wait_request_line
from http_upstream import HttpRecorder
from mtlsd_harness import daemon_config, server_listener, write_config
from test_reload_host_rules import H2, Http1

# The fields a request line has of its connection (interface.md), all rendered once.
CONNECTION_FIELDS = ("conn_id", "listener", "client", "identity", "tls_version", "cipher",
                     "resumed", "sni", "alpn", "upstream", "upstream_connect_ms", "peer_subject",
                     "peer_serial", "peer_issuer", "peer_sha256", "peer_not_after")

TEXT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def text_fields(raw: str) -> dict:
    """A text line's fields (`ts level msg k=v ...`), quoted values unquoted."""
    fields = {}
    for key, value in TEXT_PAIR.findall(raw.split(" ", 3)[3]):
        fields[key] = (value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                       if value.startswith('"') else value)
    return fields


def as_text(value) -> str:
    """A JSON line's value as the text format writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def reload_format(daemon, config: dict, fmt: str) -> None:
    """Reloads with log.format `fmt`; returns once the "reloaded" line is out in that format."""
    config["log"]["format"] = fmt
    mark = daemon.log_mark()
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    if fmt == "json":
        daemon.wait_for_log(lambda l: l.get("msg") == "reloaded", since=mark)
    else:
        daemon.wait_for_log(lambda l: " info reloaded " in l.get("_raw", ""), since=mark)


@pytest.mark.parametrize("connect", [Http1, H2], ids=["http1", "h2"])
def test_an_open_connections_request_lines_follow_a_reload_of_log_format(start_mtlsd,
                                                                         make_upstream, pki,
                                                                         connect):
    up = make_upstream(HttpRecorder().handler())
    config = daemon_config([server_listener(pki, up.address, http={})],
                           reload={"watch": False})
    daemon = start_mtlsd(config)
    conn = connect(daemon, pki, "localhost")
    try:
        assert conn.status("localhost", "/json-1") == 200
        first = wait_request_line(daemon, path="/json-1")
        expected = {k: as_text(first[k]) for k in CONNECTION_FIELDS}

        reload_format(daemon, config, "text")
        mark = daemon.log_mark()
        assert conn.status("localhost", "/text-2") == 200
        raw = daemon.wait_for_log(lambda l: " info request " in l.get("_raw", "")
                                  and " path=/text-2 " in l["_raw"], since=mark)["_raw"]
        second = text_fields(raw)
        assert {k: second.get(k, "(missing)") for k in CONNECTION_FIELDS} == expected, raw

        reload_format(daemon, config, "json")
        assert conn.status("localhost", "/json-3") == 200
        third = wait_request_line(daemon, path="/json-3")
        assert {k: third[k] for k in CONNECTION_FIELDS} == {k: first[k] for k in CONNECTION_FIELDS}
    finally:
        conn.close()
