"""`mtlsd check` (nginx -t style, FILE:LINE:COL errors) and `mtlsd verify`
(would this client certificate be admitted, by the handshake's own code)."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from mtlsd_harness import daemon_config, run_cli, server_listener, write_config

BASE_YAML = """\
admin:
  address: 127.0.0.1:0
log:
  level: info
  format: json
listeners:
  - name: inbound
    mode: server
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
    max_connections: 100
    timeouts:
      handshake: 10s
    tls:
      cert: {pki}/server.crt
      key: {pki}/server.key
    client_auth:
      mode: require
      ca:
        - {pki}/ca.crt
"""


def output(proc) -> str:
    return proc.stdout + proc.stderr


def located_lines(text: str, path: str) -> list[tuple[int, str]]:
    """(line, message) for every `PATH:LINE:COL: message` in the output."""
    pattern = re.compile(rf"^{re.escape(path)}:(\d+):(\d+): (.+)$", re.M)
    return [(int(m.group(1)), m.group(3)) for m in pattern.finditer(text)]


def line_of(text: str, marker: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if marker in line:
            return number
    raise ValueError(marker)


def test_check_good_config(mtlsd_bin, pki, tmp_path):
    cfg = write_config(tmp_path / "good.yaml", BASE_YAML.format(pki=pki.root))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert proc.returncode == 0, output(proc)
    assert not located_lines(output(proc), str(cfg)), output(proc)


def test_check_good_config_with_every_server_tls_feature(mtlsd_bin, pki, tmp_path):
    listeners = [
        server_listener(pki, "127.0.0.1:9", name="plain"),
        server_listener(pki, "127.0.0.1:9", name="encrypted",
                        tls={"key": pki.path("server-enc.key"),
                             "key_password_file": pki.path("server-enc.pass")}),
        server_listener(pki, "127.0.0.1:9", name="p12",
                        tls={"cert": None, "key": None, "pkcs12": pki.path("server.p12"),
                             "pkcs12_password_file": pki.path("server.p12.pass")}),
        server_listener(pki, "unix:/tmp/mtlsd-check-test.sock", name="chain",
                        tls={"cert": pki.path("server-int-fullchain.crt"),
                             "key": pki.path("server-int.key")},
                        client_auth={"ca": [pki.path("ca.crt"), pki.path("other-ca.crt")],
                                     "verify_depth": 2,
                                     "allow": {"spiffe_ids": ["spiffe://example.org/ns/default/*"],
                                               "dns_sans": ["*.example.org"]}}),
    ]
    cfg = write_config(tmp_path / "full.yaml", daemon_config(listeners))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert proc.returncode == 0, output(proc)


# (case, line to replace, replacement, marker naming the line the error must
# point at; None = any line of the file)
BAD_CONFIGS = [
    ("unknown_key", "    max_connections: 100", "    max_connections: 100\n    bogus_key: 1",
     "bogus_key"),
    ("unknown_top_level_key", "log:", "colour: blue\nlog:", "colour"),
    ("wrong_type", "    max_connections: 100", "    max_connections: lots", "lots"),
    ("wrong_type_top_level", "log:", "workers: many\nlog:", "many"),
    ("bad_duration", "      handshake: 10s", "      handshake: 10 parsecs", "parsecs"),
    ("bad_address", "    listen: 127.0.0.1:0", "    listen: nowhere", "nowhere"),
    ("bad_port", "    listen: 127.0.0.1:0", "    listen: 127.0.0.1:99999", "99999"),
    ("bad_enum", "      mode: require", "      mode: sometimes", "sometimes"),
    ("missing_cert_file", "      cert: {pki}/server.crt", "      cert: /nonexistent/server.crt",
     "nonexistent"),
    ("missing_ca_file", "        - {pki}/ca.crt", "        - /nonexistent/ca.crt", "nonexistent"),
    ("key_does_not_match_cert", "      key: {pki}/server.key", "      key: {pki}/client.key",
     ("server.crt", "client.key")),
    ("wrong_key_password", "      key: {pki}/server.key",
     "      key: {pki}/server-enc.key\n      key_password_file: {tmp}/wrong.pass",
     ("server.crt", "server-enc.key", "wrong.pass")),
    ("yaml_syntax", "      handshake: 10s", "      handshake: [10s", None),
]


@pytest.mark.parametrize("case,old,new,marker", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_check_bad_config(mtlsd_bin, pki, tmp_path, case, old, new, marker):
    (tmp_path / "wrong.pass").write_text("not the password\n")
    base = BASE_YAML.format(pki=pki.root)
    old = old.format(pki=pki.root)
    assert base.count(old + "\n") == 1, old
    text = base.replace(old + "\n", new.format(pki=pki.root, tmp=tmp_path) + "\n")
    cfg = write_config(tmp_path / f"{case}.yaml", text)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = output(proc)
    assert proc.returncode == 1, out
    located = located_lines(out, str(cfg))
    assert located, f"no '{cfg}:LINE:COL: message' line in:\n{out}"
    if marker is not None:
        markers = marker if isinstance(marker, tuple) else (marker,)
        want = {line_of(text, m) for m in markers}
        assert {line for line, _ in located} & want, f"expected line(s) {want}:\n{out}"


def test_check_reports_every_problem(mtlsd_bin, pki, tmp_path):
    text = (BASE_YAML.format(pki=pki.root)
            .replace("    max_connections: 100\n", "    max_connections: 100\n    bogus_key: 1\n")
            .replace("      handshake: 10s\n", "      handshake: 10 parsecs\n"))
    cfg = write_config(tmp_path / "two.yaml", text)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert proc.returncode == 1
    lines = {line for line, _ in located_lines(output(proc), str(cfg))}
    assert {line_of(text, "bogus_key"), line_of(text, "parsecs")} <= lines, output(proc)


def test_check_warns_about_readable_private_key(mtlsd_bin, pki, tmp_path):
    key = tmp_path / "server.key"
    shutil.copy(pki.path("server.key"), key)
    os.chmod(key, 0o644)
    text = BASE_YAML.format(pki=pki.root).replace(f"{pki.root}/server.key", str(key))
    cfg = write_config(tmp_path / "loose.yaml", text)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert proc.returncode == 0, output(proc)
    assert str(key) in output(proc) or "server.key" in output(proc), output(proc)


def test_check_reports_expired_certificate(mtlsd_bin, pki, tmp_path):
    text = (BASE_YAML.format(pki=pki.root)
            .replace(f"{pki.root}/server.crt", pki.path("client-expired.crt"))
            .replace(f"{pki.root}/server.key", pki.path("client-expired.key")))
    cfg = write_config(tmp_path / "expired.yaml", text)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert "expire" in output(proc).lower() and "client-expired.crt" in output(proc), output(proc)


# --- verify -------------------------------------------------------------------

@pytest.fixture
def verify_config(pki, tmp_path):
    listeners = [
        server_listener(pki, "127.0.0.1:9", name="inbound"),
        server_listener(pki, "127.0.0.1:9", name="restricted", client_auth={
            "allow": {"spiffe_ids": ["spiffe://example.org/ns/other/sa/client2"]}}),
        server_listener(pki, "127.0.0.1:9", name="shallow", client_auth={"verify_depth": 0}),
    ]
    return write_config(tmp_path / "verify.yaml", daemon_config(listeners))


def verify(mtlsd_bin, cfg, pki, listener, cert, chain=None, at=None):
    args = ["verify", "--config", str(cfg), "--listener", listener, "--cert", pki.path(cert)]
    if chain:
        args += ["--chain", pki.path(chain)]
    if at:
        args += ["--at", at]
    return run_cli(mtlsd_bin, *args)


@pytest.mark.parametrize("listener,cert,chain,identity", [
    ("inbound", "client.crt", None, "spiffe://example.org/ns/default/sa/client"),
    ("inbound", "client-int.crt", "int.crt", "spiffe://example.org/ns/default/sa/client-int"),
    ("inbound", "client-noeku.crt", None, "spiffe://example.org/ns/default/sa/client-noeku"),
    ("restricted", "client2.crt", None, "spiffe://example.org/ns/other/sa/client2"),
    ("shallow", "client.crt", None, "spiffe://example.org/ns/default/sa/client"),
])
def test_verify_accepts(mtlsd_bin, pki, verify_config, listener, cert, chain, identity):
    proc = verify(mtlsd_bin, verify_config, pki, listener, cert, chain)
    assert proc.returncode == 0, output(proc)
    assert f"accepted: {identity}" in proc.stdout.splitlines(), output(proc)


@pytest.mark.parametrize("listener,cert,chain,reason", [
    ("inbound", "client-expired.crt", None, "expired"),
    ("inbound", "client-notyet.crt", None, "not_yet_valid"),
    ("inbound", "client-other.crt", None, "unknown_ca"),
    ("inbound", "client-int.crt", None, "unknown_ca"),
    ("inbound", "client-serverauth.crt", None, "bad_key_usage"),
    ("restricted", "client.crt", None, "not_authorized"),
    ("shallow", "client-int.crt", "int.crt", "chain_too_long"),
])
def test_verify_rejects(mtlsd_bin, pki, verify_config, listener, cert, chain, reason):
    proc = verify(mtlsd_bin, verify_config, pki, listener, cert, chain)
    assert proc.returncode == 1, output(proc)
    assert any(l.startswith(f"rejected: {reason}: ") for l in proc.stdout.splitlines()), output(proc)


def test_verify_at_inside_an_expired_certificates_window(mtlsd_bin, pki, verify_config):
    # gen-pki makes client-expired valid from 2 years ago to 1 year ago.
    inside = datetime.now(timezone.utc) - timedelta(days=540)
    for at in (inside.strftime("%Y-%m-%dT%H:%M:%SZ"), f"@{int(inside.timestamp())}"):
        proc = verify(mtlsd_bin, verify_config, pki, "inbound", "client-expired.crt", at=at)
        assert proc.returncode == 0, output(proc)
        assert proc.stdout.startswith("accepted: ")


def test_verify_at_after_a_certificates_expiry(mtlsd_bin, pki, verify_config):
    # --at is the client certificate's validation time: client.crt has
    # expired five years from now (the question is about the client, so the
    # listener's own certificate expiring by then must not turn it into an error).
    later = (datetime.now(timezone.utc) + timedelta(days=5 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    proc = verify(mtlsd_bin, verify_config, pki, "inbound", "client.crt", at=later)
    assert proc.returncode == 1 and proc.stdout.startswith("rejected: expired: "), output(proc)


def test_verify_unknown_listener_fails(mtlsd_bin, pki, verify_config):
    proc = verify(mtlsd_bin, verify_config, pki, "no-such-listener", "client.crt")
    assert proc.returncode != 0
    assert "accepted" not in proc.stdout
