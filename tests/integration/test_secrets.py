"""Secrets (issue 11): a password or private key never appears in mtlsd's logs or errors, whether
start-up, `mtlsd check` or a reload fails on it. The secrets used here are distinctive strings,
so finding any of them anywhere in the output is the failure."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest

from mtlsd_harness import Mtlsd, daemon_config, run_cli, server_listener, write_config

WRONG_PASSWORD = "wr0ng-Pa55word-e7c1b2"
RIGHT_PASSWORD = "server-enc-secret"  # scripts/gen-pki.sh
# Not a key, but shaped like one: what an error must not quote.
KEY_BODY = base64.b64encode(b"SECRET-KEY-MATERIAL-0123456789-do-not-log" * 3).decode()
BAD_KEY = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"


def leaked(text: str, *secrets: str) -> list[str]:
    # Base64 wraps at 64 columns in a PEM: look for a fragment, not the whole body.
    return [s for s in secrets if s and (s in text or s[:24] in text)]


def key_pem_body(pki, name: str) -> str:
    lines = Path(pki.path(name)).read_text().splitlines()
    return "".join(l for l in lines if l and not l.startswith("-----") and ":" not in l)


def encrypted_listener(pki, upstream: str, password_file: Path) -> dict:
    return server_listener(pki, upstream, tls={"key": pki.path("server-enc.key"),
                                                "key_password_file": str(password_file)})


def test_wrong_password_is_not_in_startup_or_check_errors(mtlsd_bin, pki, tmp_path):
    wrong = tmp_path / "wrong.pass"
    wrong.write_text(WRONG_PASSWORD + "\n")
    config = daemon_config([encrypted_listener(pki, "127.0.0.1:9", wrong)])
    daemon = Mtlsd(mtlsd_bin, config, tmp_path / "run")
    try:
        daemon.start(wait_ready=False)
        assert daemon.wait_exit() == 1
        out = daemon.output_tail(200)
    finally:
        daemon.kill()
    assert "wrong password" in out, out
    assert not leaked(out, WRONG_PASSWORD, RIGHT_PASSWORD, key_pem_body(pki, "server-enc.key"))

    proc = run_cli(mtlsd_bin, "check", "--config", str(daemon.config_path))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "wrong password" in text, text
    assert not leaked(text, WRONG_PASSWORD, RIGHT_PASSWORD)


@pytest.mark.parametrize("where", ["file", "inline"])
def test_bad_key_bytes_are_not_in_errors(mtlsd_bin, pki, tmp_path, where):
    """A key file that is not a key, and a key pasted into the YAML where its path belongs."""
    if where == "file":
        bad = tmp_path / "bad.key"
        bad.write_text(BAD_KEY)
        key, secret = str(bad), KEY_BODY
    else:
        key, secret = Path(pki.path("server.key")).read_text(), key_pem_body(pki, "server.key")
    config = daemon_config([server_listener(pki, "127.0.0.1:9", tls={"key": key})])
    cfg = write_config(tmp_path / "mtlsd.yaml", config)
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert str(cfg) in text, text  # the error still says where
    assert not leaked(text, secret), text


def test_reload_with_wrong_password_does_not_log_it(mtlsd_bin, pki, make_upstream, tmp_path):
    right = tmp_path / "key.pass"
    right.write_text(RIGHT_PASSWORD + "\n")
    daemon = Mtlsd(mtlsd_bin, daemon_config([encrypted_listener(
        pki, make_upstream().address, right)], reload={"watch": False}), tmp_path / "run")
    try:
        daemon.start()
        right.write_text(WRONG_PASSWORD + "\n")
        daemon.send_signal(signal.SIGHUP)
        line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith("reload failed"))
        assert "wrong password" in line["error"], line
        assert daemon.running()
        out = daemon.stderr_text() + daemon.output_tail(200)
    finally:
        daemon.kill()
    assert not leaked(out, WRONG_PASSWORD, RIGHT_PASSWORD, key_pem_body(pki, "server-enc.key"))
