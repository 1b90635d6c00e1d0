"""JSON logs: every line is a valid JSON object, hostile strings are escaped,
and the access line carries every field the harness contract names."""

from __future__ import annotations

import json
import signal
import subprocess

import yaml

from mtlsd_harness import client_context, echo_roundtrip, tls_exchange, write_config
from helpers import reload_with
from test_health import wait_scrape
from pki import write_cert_and_key

ACCESS_FIELDS = {
    "listener": str, "client": str, "identity": str, "tls_version": str, "cipher": str,
    "rx_bytes": int, "tx_bytes": int, "duration_ms": (int, float), "result": str,
    "reason": str, "detail": str,
    # interface.md, "Access-log fields" (tests/integration/test_access_fields.py checks values)
    "start": str, "conn_id": int, "sni": str, "alpn": str, "upstream": str,
    "upstream_connect_ms": (int, type(None)), "peer_serial": str, "peer_issuer": str,
    "peer_sha256": str, "peer_not_after": str, "termination": str,
}


def test_every_line_is_json_with_contract_fields(serve, pki):
    daemon, _ = serve()
    ok = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    bad = tls_exchange(daemon.addr(), client_context(pki, "client-other"))
    assert ok.error is None and bad.data == b""
    daemon.wait_for_access(client=ok.local)
    daemon.wait_for_access(client=bad.local)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0

    lines = daemon.logs()
    raw = [l["_raw"] for l in lines if "_raw" in l]
    assert not raw, f"non-JSON log lines: {raw[:5]}"
    for line in lines:
        for key in ("ts", "level", "msg"):
            assert key in line, line
    msgs = [l["msg"] for l in lines]
    assert "listening" in msgs and "admin listening" in msgs and "ready" in msgs

    access = daemon.access_logs()
    assert len(access) == 2, access
    for line in access:
        for key, kind in ACCESS_FIELDS.items():
            assert isinstance(line.get(key), kind), (key, line)
        assert line["result"] in ("accepted", "rejected", "error")
    assert {l["result"] for l in access} == {"accepted", "rejected"}
    assert {l["termination"] for l in access} == {"client_close", "refused"}


def test_subject_identity_is_escaped(serve, pki):
    # client-quote has no SAN and CN `quote"back\slash`: the identity is the
    # subject, and the line must still parse as JSON.
    daemon, _ = serve()
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client-quote"))
    assert ex.error is None
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "accepted"
    assert "quote" in line["identity"] and "back" in line["identity"]
    assert not [l for l in daemon.logs() if "_raw" in l]


def test_an_sni_that_is_not_utf8_leaves_the_access_line_valid(serve, pki):
    """Review: a peer without a certificate sent the SNI 'a\\xffb.example' and the access line
    carried the byte raw: not UTF-8, so strict JSON readers dropped or choked on it."""
    daemon, up = serve()
    subprocess.run([b"openssl", b"s_client", b"-connect", daemon.listeners["inbound"].encode(),
                    b"-servername", b"a\xffb.example"], input=b"", capture_output=True,
                   timeout=20)
    line = daemon.wait_for_access(result="rejected")
    # The name as allow rules judge it (tls::client_sni): a byte no host name holds shows as '?'.
    assert line["sni"] == "a?b.example", line
    raw = [l for l in daemon.stderr_path.read_bytes().split(b"\n") if b'"msg":"access"' in l]
    assert raw, "no access line"
    for l in raw:
        json.loads(l.decode("utf-8"))  # strict: fails on a byte that is not UTF-8
    up.assert_untouched()


def big_subject_certificate(tmp_path):
    """A self-signed client certificate whose subject is 450 OUs of 60 commas (64 KB of DER;
    each comma is 3 bytes once RFC 2253 and JSON have escaped it): (cert, key) paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "," * 60)] * 450)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return write_cert_and_key(cert, key, tmp_path / "big.crt", tmp_path / "big.key")


def test_a_huge_certificate_subject_cannot_keep_its_refusal_out_of_the_access_log(serve, pki,
                                                                                 tmp_path):
    """Review: the subject went into the line whole, three times (peer_subject, peer_issuer of a
    self-signed certificate, the detail), about 4.5 times its DER once escaped: past the log's
    128 KiB queue the line was dropped whole, so an unauthenticated client's refusal left no
    line (only mtlsd_access_log_dropped_total moved). Peer-controlled fields are cut at 1 KiB."""
    daemon, up = serve()
    cert, key = big_subject_certificate(tmp_path)
    ctx = client_context(pki, None)
    ctx.load_cert_chain(cert, key)
    ex = tls_exchange(daemon.addr(), ctx)
    line = daemon.wait_for_access(client=ex.local)
    assert line["result"] == "rejected" and line["reason"] == "unknown_ca", line["reason"]
    for key_name in ("peer_subject", "peer_issuer", "detail"):
        assert len(line[key_name]) < 2200, (key_name, len(line[key_name]))
    assert line["peer_subject"].endswith("more bytes)"), line["peer_subject"][-40:]
    up.assert_untouched()


def test_access_log_can_be_disabled(serve, pki):
    daemon, _ = serve(top={"log": {"access_log": False}})
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.error is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(5) == 0
    assert daemon.access_logs() == []


def test_an_ipv4_client_of_a_dual_stack_listener_is_logged_as_ipv4(serve, pki):
    # The socket says ::ffff:127.0.0.1; X-Forwarded-For, PROXY v2 and the source checks say
    # 127.0.0.1, and so does the access line (as Envoy's does), so that one client has one name.
    daemon, _ = serve(listen="[::]:0")
    _, port = daemon.addr()
    ex = echo_roundtrip(("127.0.0.1", port), client_context(pki, "client"))
    assert ex.error is None and ex.local.startswith("127.0.0.1:"), ex
    line = daemon.wait_for_access()
    assert line["client"] == ex.local, line


def test_access_lines_are_written_whatever_the_log_level(serve, pki):
    """log.level filters event lines only: access_log: true is one line per connection at
    `error` too, on stderr (review: they were info lines there, so `level: warn` or `error`
    silently dropped the access log, unlike nginx's access_log beside its error_log level)."""
    daemon, _ = serve(top={"reload": {"watch": False}})
    config = yaml.safe_load(daemon.config_path.read_text())
    config["log"]["level"] = "error"
    mark = daemon.log_mark()
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    wait_scrape(daemon, lambda m: m.get("mtlsd_config_reloads_total", result="success") == 1,
                "the reload to log.level: error")
    ok = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    bad = tls_exchange(daemon.addr(), client_context(pki, "client-other"))
    assert ok.error is None and bad.data == b""
    assert daemon.wait_for_access(client=ok.local)["result"] == "accepted"
    assert daemon.wait_for_access(client=bad.local)["reason"] == "unknown_ca"
    # Back to info: that reload's "reloaded" line is written after any the reload to `error`
    # could have written (one queue), so by then such a line would be in the log.
    config["log"]["level"] = "info"
    line = reload_with(daemon, config)
    assert [l for l in daemon.logs()[mark:] if l.get("msg") == "reloaded"] == [line], \
        "an event line below log.level was written"
