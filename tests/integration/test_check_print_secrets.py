"""`mtlsd check --print` and inline secrets (review). A pkcs11 URI's pin-value is printed as
REDACTED; checked again, that placeholder is refused at the key's line before the token is
opened (a login with it spent one of the few tries before a token locks). A pin-value in the
URI's path, where RFC 7512 has none, is refused (printed, the rest of its URI was lost). Values
that only look like a URL with a password (an allow list's URI SAN, a health check's path) are
printed as loaded, not redacted into other values."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from mtlsd_harness import daemon_config, run_cli, server_listener, write_config
from test_pkcs11 import PIN, Token, key_position

REDACTED_PIN = ("pin-value is REDACTED, the placeholder that mtlsd check --print writes for the "
                "PIN: the printed configuration's PIN was redacted and must be given again (or "
                "give it in key_pin_file)")
PIN_IN_PATH = ("pin-value belongs in the URI's query part, after '?' (pkcs11:...?pin-value=...; "
               "RFC 7512), or give the PIN in key_pin_file")


@pytest.fixture(scope="module")
def token(tmp_path_factory, pki):
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util is missing (apt-get install softhsm2; scripts/dev.sh deps)")
    return Token(tmp_path_factory.mktemp("softhsm"), pki, objects={"server": "server.key"})


@pytest.fixture
def hsm(token, monkeypatch):
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    return token


def token_files(token: Token) -> dict[str, tuple[int, bytes]]:
    """SoftHSM writes a token's object file at every login, a failed one too."""
    out = {}
    for p in sorted((token.root / "tokens").rglob("*")):
        if p.is_file():
            out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


def key_config(tmp_path: Path, pki, key: str, **overrides) -> Path:
    listener = server_listener(pki, "127.0.0.1:9", tls={"cert": pki.path("server.crt"),
                                                        "key": key})
    return write_config(tmp_path / "in.yaml", daemon_config([listener], **overrides))


def test_a_printed_pin_is_refused_at_its_line_without_a_login(mtlsd_bin, pki, hsm, tmp_path):
    key = f"{hsm.uri('server')}&pin-value={PIN}"
    proc = run_cli(mtlsd_bin, "check", "--print", "--config", str(key_config(tmp_path, pki, key)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert PIN not in proc.stdout + proc.stderr
    printed_key = yaml.safe_load(proc.stdout)["listeners"][0]["tls"]["key"]
    assert printed_key == f"{hsm.uri('server')}&pin-value=REDACTED", proc.stdout
    printed = write_config(tmp_path / "printed.yaml", proc.stdout)

    before = token_files(hsm)
    proc = run_cli(mtlsd_bin, "check", "--config", str(printed))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (f"{printed}:{key_position(printed.read_text())}: listeners[0].tls.key: not a usable "
            f"PKCS#11 URI: {REDACTED_PIN}") in out.splitlines(), out
    assert "CKR_PIN" not in out, out
    assert token_files(hsm) == before, "the token recorded a login"

    # Given again, the PIN makes the printed file the same, usable configuration.
    printed.write_text(printed.read_text().replace("pin-value=REDACTED", f"pin-value={PIN}"))
    proc = run_cli(mtlsd_bin, "check", "--config", str(printed))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_pin_in_the_uris_path_is_refused(mtlsd_bin, pki, hsm, tmp_path):
    # RFC 7512's example spelling of a pin-value, but in the path: `check --print` printed this
    # key as "pkcs11:token=mtlsd;object=server;pin-value=REDACTED", naming no module.
    key = f"pkcs11:token=mtlsd;object=server;pin-value={PIN}?module-path={hsm.module}"
    cfg = key_config(tmp_path, pki, key)
    before = token_files(hsm)
    proc = run_cli(mtlsd_bin, "check", "--print", "--config", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (f"{cfg}:{key_position(cfg.read_text())}: listeners[0].tls.key: not a usable PKCS#11 "
            f"URI: {PIN_IN_PATH}") in out.splitlines(), out
    assert PIN not in out, out
    assert token_files(hsm) == before, "the token recorded a login"


def test_values_like_a_url_with_a_password_are_printed_as_loaded(mtlsd_bin, pki, tmp_path):
    allow = {"uri_sans": ["https://user:x@svc.example/a"],
             "rules": [{"spiffe_ids": ["spiffe://example.org/*"],
                        "not": {"uri_sans": ["https://old:y@svc.example/"]}}]}
    path = "/health?from=http://u:z@here"
    listener = server_listener(pki, "127.0.0.1:9", client_auth={"allow": allow},
                               upstream_check={"type": "http", "path": path})
    cfg = write_config(tmp_path / "in.yaml", daemon_config([listener]))
    proc = run_cli(mtlsd_bin, "check", "--print", "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ":REDACTED@" not in proc.stdout, proc.stdout
    (printed,) = yaml.safe_load(proc.stdout)["listeners"]
    assert printed["client_auth"]["allow"]["uri_sans"] == allow["uri_sans"]
    assert printed["client_auth"]["allow"]["rules"] == allow["rules"]
    assert printed["upstream_check"]["path"] == path

    again = write_config(tmp_path / "printed.yaml", proc.stdout)
    proc2 = run_cli(mtlsd_bin, "check", "--print", "--config", str(again))
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert yaml.safe_load(proc2.stdout)["listeners"] == yaml.safe_load(proc.stdout)["listeners"]
