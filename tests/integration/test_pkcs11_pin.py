"""A wrong PIN for a PKCS#11 key, on reload inside the sandbox: the reload fails and says so, the
key in use keeps serving, and once the PIN file is right the next reload takes the new key.

SoftHSM records every login, a failed one too, in the token's object file. Refused that write
(the sandbox let mtlsd only read the token directory), it took the token for broken and failed
every later login with "General Error" until mtlsd was restarted (review).
"""

from __future__ import annotations

import shutil

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, deep_merge, server_listener
from test_pkcs11 import PIN, Token, serial, served_serial


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


@pytest.fixture(autouse=True)
def _softhsm_present():
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util is missing (apt-get install softhsm2; scripts/dev.sh deps)")
