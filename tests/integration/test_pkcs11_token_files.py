"""A SoftHSM token whose files mtlsd cannot use, as under the shipped systemd unit (review): its
messages name the cause, not only the symptom.

- Files it cannot read: SoftHSM lists no token whose files its user cannot read, and the message
  said only "initialised tokens there: none". softhsm2-util, run by root, leaves each token's
  directory 0700 and its files 0600, root's; under a DynamicUser no token is seen.
- A token directory it cannot write (ProtectSystem=strict without ReadWritePaths=): SoftHSM
  records each login in the token's files, and once that write failed (after a wrong PIN) it
  fails every later login with CKR_GENERAL_ERROR, which read "General Error" and no more.

Both need root: `check` runs as uid 65534 over root's files (root reads them whatever their
mode), and the read-only directory is a bind mount in a mount namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mtlsd_harness import daemon_config, server_listener, write_config
from test_pkcs11 import Token, key_position

NOBODY = 65534


def readable_copy(pki, name: str, into: Path) -> str:
    """pki's file `name` copied into `into`, mode 0644 (the session's PKI is under 0700)."""
    out = into / name
    shutil.copyfile(pki.path(name), out)
    out.chmod(0o644)
    return str(out)


def test_token_files_unreadable_to_mtlsds_user_are_named(mtlsd_bin, pki, short_tmp):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1): check runs as uid 65534 over root's token files")
    short_tmp.chmod(0o755)
    token = Token(short_tmp / "hsm", pki, objects={"server": "server.key"})
    for d in (token.root, token.root / "tokens"):
        d.chmod(0o755)
    token.conf.chmod(0o644)
    (token_dir,) = (token.root / "tokens").iterdir()
    # As softhsm2-util leaves them (set here, whatever this umask made of them).
    token_dir.chmod(0o700)
    for f in token_dir.iterdir():
        f.chmod(0o600)
    config = write_config(short_tmp / "check.yaml", daemon_config([server_listener(
        pki, "127.0.0.1:9",
        tls={"cert": readable_copy(pki, "server.crt", short_tmp), "key": token.uri("server"),
             "key_pin_file": str(token.pin_file)},
        client_auth={"ca": [readable_copy(pki, "ca.crt", short_tmp)]})]))
    config.chmod(0o644)

    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           mtlsd_bin, "check", "--config", str(config)],
                          env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    expected = (f"{config}:{key_position(config.read_text())}: no PKCS#11 token matches "
                f"token=mtlsd in module {token.module} (initialised tokens there: none); "
                f"mtlsd's user (uid {NOBODY}) cannot read {token_dir}, and SoftHSM lists no token "
                "whose files it cannot read: make its token directory and files readable to that "
                "user (e.g. by a group it runs in)")
    assert expected in proc.stderr.splitlines(), proc.stderr


def test_a_read_only_token_directory_is_named_when_a_login_fails(mtlsd_bin, pki, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1): a read-only bind mount of the token directory")
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("000000\n")
    tokens = token.root / "tokens"

    def listener(name: str, pin: Path) -> dict:
        return server_listener(pki, "127.0.0.1:9", name=name, tls={
            "cert": pki.path("server.crt"), "key": token.uri("server"), "key_pin_file": str(pin)})
    # The first listener's wrong PIN makes SoftHSM write to the token's files, which fails; the
    # second's right PIN then fails too.
    config = write_config(tmp_path / "check.yaml",
                          daemon_config([listener("wrong", wrong), listener("right",
                                                                             token.pin_file)]))
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" check --config "$3"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", str(tokens), mtlsd_bin, str(config)],
                          env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # At the second listener's key_pin_file.
    at = next(f"{config}:{n}:{line.index('key_pin_file: ') + 15}: "
              for n, line in enumerate(config.read_text().splitlines(), start=1)
              if line.lstrip() == f"key_pin_file: {token.pin_file}")
    expected = at + (
        f"cannot log in to PKCS#11 token 'mtlsd' (PIN from key_pin_file {token.pin_file}): "
        "General Error; the token may be unable to write its files: SoftHSM records each login "
        f"in its token directory {tokens} (mtlsd cannot write to it: Read-only file system), and "
        f"once that failed (a read-only directory: systemd's ProtectSystem= without "
        f"ReadWritePaths={tokens}) fails every login until mtlsd restarts")
    assert expected in proc.stderr.splitlines(), proc.stderr
    assert "wrong PIN for PKCS#11 token 'mtlsd' (CKR_PIN_INCORRECT" in proc.stderr
