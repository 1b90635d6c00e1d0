"""How many logins a wrong PKCS#11 PIN costs. Many tokens (smart cards, PIV) lock after three
wrong PINs, and a locked token takes its security officer to unlock. mtlsd remembers a PIN the
token refused (by module, token and the PIN's SHA-256) and does not try it again in the same
process: one login per token for a start or `check` however many keys it holds, one for a
reload, none for later reloads until the PIN changes. `mtlsd verify` opens no token at all.

The logins are counted by pkcs11_login_spy.c, a module built here with cc that hands out
SoftHSM's functions and logs each C_Login with its result (review: 3 wrong logins for 3 keys
at start, 3 more for `check`, 1 per reload, 1 per `verify` run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, deep_merge, run_cli, server_listener, write_config
from test_pkcs11 import PIN, Token, serial, served_serial

SPY_SOURCE = Path(__file__).with_name("pkcs11_login_spy.c")
CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
NOT_AGAIN = ("; the token refused this PIN before, so it is not tried again until the PIN "
             "changes (tokens lock after a few wrong PINs)")


@pytest.fixture(scope="module")
def spy_module(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler to build the login-counting module (apt-get install gcc)")
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util is missing (apt-get install softhsm2; scripts/dev.sh deps)")
    # "softhsm" in its name: mtlsd's sandbox then lets it read and write SoftHSM's tokens.
    out = tmp_path_factory.mktemp("spy") / "softhsm-login-spy.so"
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SPY_SOURCE), "-ldl"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


class Spy:
    def __init__(self, log: Path):
        self.log = log

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def logins(self) -> list[str]:
        return [l for l in self.lines() if l.startswith("C_Login ")]

    def wrong(self) -> int:
        return sum(1 for l in self.logins() if not l.endswith(" rv=0x0"))

    def right(self) -> int:
        return sum(1 for l in self.logins() if l.endswith(" rv=0x0"))


@pytest.fixture
def token_and_spy(tmp_path, pki, spy_module, monkeypatch) -> tuple[Token, Spy]:
    token = Token(tmp_path / "hsm", pki,
                  objects={"server": "server.key", "server2": "server-int.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    monkeypatch.setenv("SPY_TARGET", token.module)
    log = tmp_path / "spy.log"
    monkeypatch.setenv("SPY_LOG", str(log))
    return token, Spy(log)


def replace_file(path: Path, text: str) -> None:
    """Writes `path` whole at once (a reload never reads it half written)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def token_listener(pki, upstream: str, name: str, cert: str, key: str, pin_file: Path,
                   **more) -> dict:
    return server_listener(pki, upstream, name=name, tls={
        "cert": pki.path(cert), "key": key, "key_pin_file": str(pin_file)}, **more)


def three_listeners(pki, token: Token, spy_module: Path, pin_file: Path, upstream: str) -> dict:
    """Three listeners whose keys are on one token (two share a key)."""
    def key(obj: str) -> str:
        return token.uri(obj, module=str(spy_module))
    return daemon_config([
        token_listener(pki, upstream, "l0", "server.crt", key("server"), pin_file),
        token_listener(pki, upstream, "l1", "server-int-fullchain.crt", key("server2"), pin_file),
        token_listener(pki, upstream, "l2", "server.crt", key("server"), pin_file),
    ])


def test_a_wrong_pin_costs_one_login_per_check_and_per_start(start_mtlsd, make_upstream, pki,
                                                             token_and_spy, spy_module, tmp_path,
                                                             mtlsd_bin):
    token, spy = token_and_spy
    wrong = token.root / "wrong-pin"
    wrong.write_text("000000\n")
    config = three_listeners(pki, token, spy_module, wrong, make_upstream().address)
    path = write_config(tmp_path / "three.yaml", config)

    proc = run_cli(mtlsd_bin, "check", "--config", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (spy.wrong(), spy.right()) == (1, 0), spy.lines()
    said = [l for l in proc.stderr.splitlines() if "PKCS#11 token 'mtlsd'" in l]
    first = f"wrong PIN for PKCS#11 token 'mtlsd' (CKR_PIN_INCORRECT; from key_pin_file {wrong})"
    assert len(said) == 3, proc.stderr
    assert said[0].endswith(": " + first), said
    assert all(l.endswith(": " + first + NOT_AGAIN) for l in said[1:]), said

    daemon = start_mtlsd(config, wait_ready=False)
    assert daemon.wait_exit(30) == 1, daemon.output_tail()
    assert (spy.wrong(), spy.right()) == (2, 0), spy.lines()
    errors = [l.get("msg", "") for l in daemon.logs()
              if "PKCS#11 token 'mtlsd'" in l.get("msg", "")]
    assert len(errors) == 3 and sum(NOT_AGAIN in e for e in errors) == 2, errors
    assert PIN not in proc.stderr + daemon.stderr_text()


def test_a_reload_tries_a_refused_pin_once_and_a_changed_one_again(start_mtlsd, make_upstream,
                                                                   pki, token_and_spy,
                                                                   spy_module):
    token, spy = token_and_spy
    other_pin = token.add_other_token()  # not logged in to until a reload names it
    ca_copy = token.root / "ca.crt"  # a file the configuration names, rewritten below
    ca_copy.write_bytes(Path(pki.path("ca.crt")).read_bytes())

    up = make_upstream()
    auth = {"client_auth": {"ca": [str(ca_copy)]}}
    config = daemon_config([token_listener(
        pki, up.address, "inbound", "server.crt", token.uri("server", module=str(spy_module)),
        token.pin_file, **auth)])
    daemon = start_mtlsd(config)
    assert (spy.wrong(), spy.right()) == (0, 1), spy.lines()
    old, new = serial(pki.path("server.crt")), serial(pki.path("server-int.crt"))

    moved = deep_merge(config, {"listeners": [token_listener(
        pki, up.address, "inbound", "server-int-fullchain.crt",
        token.uri("server2", "other", module=str(spy_module)), other_pin, **auth)]})
    failed = "reload failed; still serving the previous configuration"
    mark = daemon.log_mark()
    reload_with(daemon, moved, wait=False)
    line = daemon.wait_for_log(lambda l: l.get("msg") == failed and
                               "wrong PIN for PKCS#11 token 'other'" in l.get("error", ""),
                               since=mark)
    assert NOT_AGAIN not in line["error"], line
    # Later reloads (a signal, a file the configuration names rewritten) keep the PIN, and
    # do not try it again.
    later = []
    for i in range(3):
        mark = daemon.log_mark()
        if i == 1:
            replace_file(ca_copy, Path(pki.path("ca.crt")).read_text() + "\n")
        else:
            daemon.send_signal(signal.SIGHUP)
        later.append(daemon.wait_for_log(lambda l: l.get("msg") == failed and
                                         "wrong PIN for PKCS#11 token 'other'" in
                                         l.get("error", ""), since=mark))
    assert (spy.wrong(), spy.right()) == (1, 1), spy.lines()
    assert all(NOT_AGAIN in l["error"] for l in later), later
    assert served_serial(daemon.addr(), pki) == old

    # Another PIN is tried (once), and the right one takes the reload through.
    mark = daemon.log_mark()
    replace_file(other_pin, "111111\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == failed and "token 'other'" in l.get("error", "")
                        and NOT_AGAIN not in l.get("error", ""), since=mark)
    assert (spy.wrong(), spy.right()) == (2, 1), spy.lines()
    replace_file(other_pin, PIN + "\n")
    assert reload_with(daemon, moved)["result"] == "success"
    assert (spy.wrong(), spy.right()) == (2, 2), spy.lines()
    assert served_serial(daemon.addr(), pki) == new
    assert PIN not in daemon.stderr_text()


@pytest.mark.parametrize("shape", ["key", "certificates"])
def test_verify_opens_no_token(pki, token_and_spy, spy_module, tmp_path, mtlsd_bin, shape):
    """verify judges the peer's certificate and signs nothing: a wrong PIN costs no login (the
    module is not even loaded), and the verdict is the one it would be with the right PIN."""
    token, spy = token_and_spy
    wrong = token.root / "wrong-pin"
    wrong.write_text("000000\n")
    tls = {"cert": pki.path("server.crt"), "key": token.uri("server", module=str(spy_module)),
           "key_pin_file": str(wrong)}
    if shape == "certificates":
        second = {"cert": pki.path("server-int-fullchain.crt"),
                  "key": token.uri("server2", module=str(spy_module)),
                  "key_pin_file": str(wrong), "server_names": ["other.example"]}
        tls = {"cert": None, "key": None, "certificates": [tls, second]}
    path = write_config(tmp_path / "verify.yaml",
                        daemon_config([server_listener(pki, "127.0.0.1:9", tls=tls)]))
    runs = [(verdict, run_cli(mtlsd_bin, "verify", "--config", str(path), "--listener",
                              "inbound", "--cert", pki.path(cert)))
            for cert, verdict in (("client.crt", f"accepted: {CLIENT_ID}\n"),
                                  ("server.crt", "rejected: "))]
    assert spy.lines() == [], [p.stderr for _, p in runs] + spy.lines()
    for verdict, proc in runs:
        assert proc.stdout.startswith(verdict), proc.stdout + proc.stderr
