"""A wrong PIN for a PKCS#11 key, on reload inside the sandbox: the reload fails and says so, the
key in use keeps serving, and once the PIN file is right the next reload takes the new key.

SoftHSM records every login, a failed one too, in the token's object file. Refused that write
(the sandbox let mtlsd only read the token directory), it took the token for broken and failed
every later login with "General Error" until mtlsd was restarted (review).

A token already logged in to is not logged in again, so a reload cannot take another PIN for
it; one that names another fails (review: the reload did not read the PIN at all and succeeded,
and the next start failed on a typo in the PIN file).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, deep_merge, run_cli, server_listener, write_config
from test_pkcs11 import PIN, Token, pin_position, serial, served_serial

RELOAD_FAILED = "reload failed; still serving the previous configuration"


def test_a_wrong_pin_on_reload_can_be_corrected_without_a_restart(start_mtlsd, make_upstream,
                                                                  pki, tmp_path, monkeypatch):
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    other_pin = token.add_other_token()  # not logged in to until the reload names it
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))

    up = make_upstream()
    config = daemon_config([server_listener(pki, up.address, tls={
        "cert": pki.path("server.crt"), "key": token.uri("server"),
        "key_pin_file": str(token.pin_file)})])
    assert config.get("sandbox", True) is not False
    daemon = start_mtlsd(config)
    old, new = serial(pki.path("server.crt")), serial(pki.path("server-int.crt"))
    assert served_serial(daemon.addr(), pki) == old

    moved = deep_merge(config, {"listeners": [server_listener(pki, up.address, tls={
        "cert": pki.path("server-int-fullchain.crt"), "key": token.uri("server2", "other"),
        "key_pin_file": str(other_pin)})]})
    mark = daemon.log_mark()
    reload_with(daemon, moved, wait=False)
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reload failed; still serving the "
                               "previous configuration" and "wrong PIN" in l.get("error", ""),
                               since=mark)
    assert "token 'other'" in line["error"], line
    assert served_serial(daemon.addr(), pki) == old

    other_pin.write_text(PIN + "\n")
    line = reload_with(daemon, moved)
    assert line["result"] == "success", line
    assert served_serial(daemon.addr(), pki) == new
    assert daemon.running()
    assert PIN not in daemon.stderr_text()


def test_another_pin_for_a_token_logged_in_to_fails_the_reload(start_mtlsd, make_upstream, pki,
                                                              tmp_path, monkeypatch):
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    up = make_upstream()
    config = daemon_config([server_listener(pki, up.address, tls={
        "cert": pki.path("server.crt"), "key": token.uri("server"),
        "key_pin_file": str(token.pin_file)})])
    assert config.get("reload", {}).get("watch", True)  # the PIN file is watched
    daemon = start_mtlsd(config)
    old = serial(pki.path("server.crt"))
    assert served_serial(daemon.addr(), pki) == old

    # A typo written to the PIN file: the file watcher reloads.
    mark = daemon.log_mark()
    replace_file(token.pin_file, "Typo-7319\n")
    line = daemon.wait_for_log(lambda l: l.get("msg") in (RELOAD_FAILED, "reloaded"), since=mark)
    assert line["msg"] == RELOAD_FAILED, line
    at = f"{daemon.config_path}:{pin_position(daemon.config_path.read_text())}: "
    assert line["error"] == at + (
        f"the PIN for PKCS#11 token 'mtlsd' (from key_pin_file {token.pin_file}) differs from "
        "the one the token was logged in with; restart mtlsd to use it (the token cannot be "
        "logged in again with a new PIN without logging out every session that is signing)"), \
        line
    m = daemon.scrape()
    assert m.get("mtlsd_config_reloads_total", result="failure") == 1
    assert m.get("mtlsd_config_last_reload_successful") == 0
    assert served_serial(daemon.addr(), pki) == old

    # The PIN it was logged in with again: the next reload goes through.
    mark = daemon.log_mark()
    replace_file(token.pin_file, PIN + "\n")
    line = daemon.wait_for_log(lambda l: l.get("msg") in (RELOAD_FAILED, "reloaded"), since=mark)
    assert line["msg"] == "reloaded", line
    assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 1
    assert served_serial(daemon.addr(), pki) == old
    assert PIN not in daemon.stderr_text() and "Typo-7319" not in daemon.stderr_text()


def test_two_keys_of_one_token_with_different_pins_are_refused(mtlsd_bin, pki, tmp_path,
                                                               monkeypatch):
    """Within one configuration too: the second key's PIN would never be looked at (review: a
    typo there passed, to fail once the first key was removed)."""
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    other = tmp_path / "other.pin"
    other.write_text("Typo-7319\n")

    def listener(name: str, pin: Path) -> dict:
        return server_listener(pki, "127.0.0.1:9", name=name, tls={
            "cert": pki.path("server.crt"), "key": token.uri("server"), "key_pin_file": str(pin)})
    config = write_config(tmp_path / "two.yaml", daemon_config([listener("first", token.pin_file),
                                                                listener("second", other)]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    at = next(f"{config}:{n}:{line.index('key_pin_file: ') + 15}: "
              for n, line in enumerate(config.read_text().splitlines(), start=1)
              if line.lstrip() == f"key_pin_file: {other}")
    assert at + (
        f"the PIN for PKCS#11 token 'mtlsd' (from key_pin_file {other}) differs from the one the "
        f"token was logged in with (from key_pin_file {token.pin_file}); give all its keys that "
        "PIN, or restart mtlsd to use the new one (the token cannot be logged in again with a new "
        "PIN without logging out every session that is signing)") in proc.stderr.splitlines(), \
        proc.stderr


def replace_file(path: Path, text: str) -> None:
    """Writes `path` whole at once (a reload never reads it half written)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(autouse=True)
def _softhsm_present():
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util is missing (apt-get install softhsm2; scripts/dev.sh deps)")
