"""Private keys in a PKCS#11 token (tls.key: "pkcs11:..."), with a SoftHSM 2 token made for
this module in a temp directory (outside every directory the configuration names, so the
sandbox must let the module read it). Real clients (openssl s_client, Python ssl) and a real
mtlsd on the other side of client mode; `mtlsd check`'s messages asserted word for word."""

from __future__ import annotations

import os
import signal
import shutil
import subprocess
from pathlib import Path

import pytest

from clients import client_context, open_tls, tls_exchange
from helpers import reload_with
from mtlsd_harness import daemon_config, deep_merge, run_cli, server_listener, write_config
from revocation_env import metric

PIN = "Xq7-pin-Zr9"  # unlike anything else in a log line
MODULES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
# object label -> the PKI key imported under it (ids 01, 02, ...)
OBJECTS = {"server": "server.key", "server2": "server-int.key", "client": "client.key"}


def module_path() -> str:
    for m in MODULES:
        if os.path.exists(m):
            return m
    pytest.fail("SoftHSM 2 is not installed (apt-get install softhsm2; scripts/dev.sh deps)")


class Token:
    def __init__(self, root: Path, pki, objects: dict[str, str] = OBJECTS):
        self.root = root
        self.module = module_path()
        self.conf = root / "softhsm2.conf"
        (root / "tokens").mkdir(parents=True)
        self.conf.write_text(f"directories.tokendir = {root / 'tokens'}\n"
                             "objectstore.backend = file\nlog.level = ERROR\n")
        self.env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}
        self.util("--init-token", "--free", "--label", "mtlsd", "--pin", PIN, "--so-pin", "123456")
        self.pki = pki
        for i, (label, key) in enumerate(objects.items(), start=1):
            self.import_key(label, key, i)
        self.pin_file = root / "pin"
        self.pin_file.write_text(PIN + "\n")

    def import_key(self, label: str, key: str, id_: int, token: str = "mtlsd") -> None:
        p8 = self.root / f"{label}.p8"
        src = key if os.path.isabs(key) else self.pki.path(key)
        subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", src,
                        "-out", str(p8)], check=True, capture_output=True)
        self.util("--import", str(p8), "--token", token, "--label", label,
                  "--id", f"{id_:02x}", "--pin", PIN)
        p8.unlink()  # only the token holds the key from here on

    def add_other_token(self) -> Path:
        """A second token, "other", holding server-int.key as "server2" (same PIN): not logged in
        to until a configuration names it. Returns a file for its PIN, beside the first's (a
        directory the sandbox reads), holding a wrong one."""
        self.util("--init-token", "--free", "--label", "other", "--pin", PIN, "--so-pin", "123456")
        self.import_key("server2", "server-int.key", 2, token="other")
        pin_file = self.root / "other-pin"
        pin_file.write_text("000000\n")
        return pin_file

    def util(self, *args: str) -> None:
        proc = subprocess.run(["softhsm2-util", *args], env=self.env, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def uri(self, obj: str, token: str = "mtlsd", module: str | None = None, extra: str = "") -> str:
        return f"pkcs11:token={token};object={obj}{extra}?module-path={module or self.module}"


@pytest.fixture(scope="module")
def token(tmp_path_factory, pki):
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util is missing (apt-get install softhsm2; scripts/dev.sh deps)")
    root = tmp_path_factory.mktemp("softhsm")
    t = Token(root, pki)
    # An RSA key too (the test PKI's are ECDSA): TLS 1.3 signs with RSA-PSS through the token.
    make_rsa_cert(pki, root)
    t.import_key("rsa", str(root / "rsa.key"), len(OBJECTS) + 1)
    (root / "rsa.key").unlink()
    # The daemons and `mtlsd check` started by this module inherit it.
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(t.conf)
    yield t
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


def make_rsa_cert(pki, out: Path) -> None:
    ext = out / "rsa.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(out / "rsa.key"), "-subj", "/CN=rsa-in-hsm", "-out", str(out / "rsa.csr")],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(out / "rsa.csr"), "-CA",
                    pki.path("ca.crt"), "-CAkey", pki.path("ca.key"), "-set_serial", "74565",
                    "-days", "30", "-extfile", str(ext), "-out", str(out / "rsa.crt")],
                   check=True, capture_output=True)


def serial(path: str) -> str:
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


def served_serial(addr, pki) -> str:
    """The serial of the certificate mtlsd served, to a client (with a client certificate) that
    finished the handshake and got its bytes echoed back. The certificate alone proves nothing
    of the token's key: a client has it before mtlsd signs (CertificateVerify), and s_client
    printed it, with "Verify return code: 0", for a handshake that then failed (review)."""
    with open_tls(addr, client_context(pki)) as sock:
        der = sock.getpeercert(binary_form=True)
        sock.sendall(b"ping\n")
        echoed = b""
        while len(echoed) < 5 and (chunk := sock.recv(64)):
            echoed += chunk
    assert echoed == b"ping\n", f"no echo after the handshake: {echoed!r}"
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         check=True, capture_output=True).stdout.decode()
    return out.strip().split("=", 1)[1]


def pkcs11_tls(token: Token, obj: str, cert: str, pki) -> dict:
    return {"cert": pki.path(cert), "key": token.uri(obj), "key_pin_file": str(token.pin_file)}


@pytest.mark.parametrize("shape", ["key", "certificates"])
def test_server_mode_signs_with_the_token(serve, pki, token, shape):
    tls = pkcs11_tls(token, "server", "server.crt", pki)
    if shape == "certificates":
        tls = {"cert": None, "key": None, "certificates": [tls]}
    daemon, _ = serve(tls=tls)
    assert any(l.get("msg") == "sandbox on" for l in daemon.logs()), daemon.output_tail()
    for version in ("1.2", "1.3"):
        ex = tls_exchange(daemon.addr(), client_context(pki, min_version=version,
                                                        max_version=version), expect=5)
        assert ex.error is None and ex.data == b"ping\n", (version, ex.error)
        assert daemon.wait_for_access(client=ex.local)["identity"] == CLIENT_ID
    assert served_serial(daemon.addr(), pki) == serial(pki.path("server.crt"))


def test_rsa_key_in_the_token_signs_pss_and_pkcs1(serve, pki, token):
    daemon, _ = serve(tls={"cert": str(token.root / "rsa.crt"), "key": token.uri("rsa"),
                           "key_pin_file": str(token.pin_file)})
    host, port = daemon.addr()
    for args, sigtype in ((["-tls1_3"], "RSA-PSS"), (["-tls1_2", "-sigalgs", "RSA+SHA256"], "RSA")):
        proc = subprocess.run(
            ["openssl", "s_client", "-connect", f"{host}:{port}", *args,
             "-cert", pki.path("client.crt"), "-key", pki.path("client.key"),
             "-CAfile", pki.path("ca.crt"), "-verify_return_error"],
            input=b"ping\n", capture_output=True, timeout=20)
        text = proc.stdout.decode(errors="replace")
        assert "Verify return code: 0 (ok)" in text, text + proc.stderr.decode(errors="replace")
        assert f"Peer signature type: {sigtype}\n" in text, text


def test_pin_from_the_uris_pin_source(serve, pki, token):
    tls = {"cert": pki.path("server.crt"),
           "key": token.uri("server", extra=f";pin-source=file:{token.pin_file}")}
    daemon, _ = serve(tls=tls)
    ex = tls_exchange(daemon.addr(), client_context(pki), expect=5)
    assert ex.error is None and ex.data == b"ping\n", ex.error


def test_client_mode_presents_the_tokens_key(start_mtlsd, make_upstream, pki, token):
    up = make_upstream()
    inbound = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    host, port = inbound.addr("inbound")
    outbound = start_mtlsd(daemon_config([{
        "name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
        "upstream": f"{host}:{port}",
        "tls": pkcs11_tls(token, "client", "client.crt", pki),
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
    }]))
    from tls_remote import plain_exchange
    data, local = plain_exchange(outbound.addr("outbound"), b"hello\n")
    assert data == b"hello\n", outbound.output_tail()
    # The remote verified the certificate whose key only the token holds.
    assert inbound.wait_for_access(result="accepted")["identity"] == CLIENT_ID
    assert outbound.wait_for_access(client=local)["result"] == "accepted"


def test_reload_switches_key_objects(start_mtlsd, make_upstream, pki, token, tmp_path,
                                     monkeypatch):
    # A token of its own, holding one key at start; the second is imported while mtlsd runs.
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    up = make_upstream()
    listener = server_listener(pki, up.address, tls=pkcs11_tls(token, "server", "server.crt", pki))
    config = daemon_config([listener])
    daemon = start_mtlsd(config)
    old, new = serial(pki.path("server.crt")), serial(pki.path("server-int.crt"))
    assert served_serial(daemon.addr(), pki) == old
    held = open_tls(daemon.addr(), client_context(pki))  # a connection made with the old key
    token.import_key("server2", "server-int.key", 2)

    mark = daemon.log_mark()
    reload_with(daemon, deep_merge(config, {"listeners": [server_listener(
        pki, up.address, tls=pkcs11_tls(token, "server2", "server-int-fullchain.crt", pki))]}))
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reloaded" and
                               l.get("certificates_rotated") == f"inbound:{old}->{new}",
                               since=mark)
    assert line["result"] == "success"
    assert served_serial(daemon.addr(), pki) == new
    held.sendall(b"still here\n")
    assert held.recv(64) == b"still here\n"

    # A broken pkcs11 key: the reload fails, says why, and the key in use keeps serving. The
    # file watcher may first read the config while it is being rewritten (empty: a failure of
    # its own), so the line looked for is the one that names the key.
    mark = daemon.log_mark()
    reload_with(daemon, deep_merge(config, {"listeners": [server_listener(
        pki, up.address, tls=pkcs11_tls(token, "gone", "server.crt", pki))]}), wait=False)
    why = ("no private key labelled 'gone' on PKCS#11 token 'mtlsd' (private keys there: "
           "'server', 'server2')")
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reload failed; still serving the "
                               "previous configuration" and why in l.get("error", ""), since=mark)
    assert line["result"] == "failure", line
    assert served_serial(daemon.addr(), pki) == new
    held.sendall(b"and now\n")
    assert held.recv(64) == b"and now\n"
    held.close()
    assert daemon.running()
    assert PIN not in daemon.stderr_text()  # the PIN never reaches a log line


def test_a_key_the_token_lost_is_our_error_not_the_clients(start_mtlsd, make_upstream, pki,
                                                           tmp_path, monkeypatch):
    """The token loses the key while mtlsd runs (here: the token is deleted). Each handshake
    then fails on our side: the client gets an internal_error alert, and the access line says
    result=error with our key named, not rejected/protocol_error, which blamed the client.
    /readyz turns 503 so that traffic goes elsewhere; a reload keeps that, and a reload to a
    key that cannot sign fails at its test signature."""
    token = Token(tmp_path / "hsm", pki,
                  objects={"server": "server.key", "server2": "server-int.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    up = make_upstream()
    # Both keys loaded at start (the second for another name), so that libp11 knows both.
    second = {**pkcs11_tls(token, "server2", "server-int-fullchain.crt", pki),
              "server_names": ["other.example"]}
    config = daemon_config([server_listener(pki, up.address, tls={
        "cert": None, "key": None,
        "certificates": [pkcs11_tls(token, "server", "server.crt", pki), second]})])
    daemon = start_mtlsd(config)
    ex = tls_exchange(daemon.addr(), client_context(pki), expect=5)
    assert ex.error is None and ex.data == b"ping\n", ex.error
    assert daemon.admin_request("/readyz").status == 200
    errors = metric(daemon, "mtlsd_connections_total", listener="inbound", result="error")
    rejected = metric(daemon, "mtlsd_connections_total", listener="inbound", result="rejected")

    token.util("--delete-token", "--token", "mtlsd")
    mark = daemon.log_mark()
    for _ in range(2):
        ex = tls_exchange(daemon.addr(), client_context(pki), expect=5)
        assert ex.error is not None and "INTERNAL_ERROR" in str(ex.error), ex.error
        line = daemon.wait_for_access(since=mark, client=ex.local)
        assert line["result"] == "error" and line["reason"] == "", line
        assert line["detail"].startswith(
            "internal error: our private key did not sign the handshake: "), line
    said = [l for l in daemon.logs()[mark:]
            if l.get("msg", "").startswith("our private key did not sign a TLS handshake")]
    assert len(said) == 1 and said[0]["listener"] == "inbound", said  # once, not per connection
    assert metric(daemon, "mtlsd_connections_total", listener="inbound",
                  result="error") == errors + 2
    assert metric(daemon, "mtlsd_connections_total", listener="inbound",
                  result="rejected") == rejected
    ready = daemon.admin_request("/readyz")
    assert ready.status == 503, ready
    assert b"listener inbound: our private key does not sign: " in ready.body, ready.body

    # A reload that keeps the key goes ahead (a token's failure must not hold back other
    # changes) and keeps what the handshakes found: still not ready.
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGHUP)
    line = daemon.wait_for_log(lambda l: l.get("msg") in (
        "reloaded", "reload failed; still serving the previous configuration"), since=mark)
    assert line.get("result") == "success", line
    assert daemon.admin_request("/readyz").status == 503
    # A reload to a key URI the configuration did not name before tries a signature with it
    # first. libp11 still lists the deleted token's objects (and the key's public half, loaded
    # at start), so the key is found and matches its certificate, and the signature fails: the
    # reload says so and the old configuration stays.
    mark = daemon.log_mark()
    renamed = {**second, "key": token.uri("server2", extra=";id=%02")}
    reload_with(daemon, daemon_config([server_listener(pki, up.address, tls={
        "cert": None, "key": None,
        "certificates": [pkcs11_tls(token, "server", "server.crt", pki), renamed]})]),
        wait=False)
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reload failed; still serving the "
                               "previous configuration" and "does not sign" in l.get("error", ""),
                               since=mark)
    assert ("the private key labelled 'server2' and with id 02 on PKCS#11 token token=mtlsd "
            "does not sign: " in line["error"]), line
    assert daemon.admin_request("/readyz").status == 503
    assert daemon.running()


# --- mtlsd check --------------------------------------------------------------

def check_config(tmp_path: Path, pki, tls: dict) -> tuple[Path, str]:
    listener = server_listener(pki, "127.0.0.1:9", tls=tls)
    path = write_config(tmp_path / "check.yaml", daemon_config([listener]))
    return path, path.read_text()


def key_position(text: str) -> str:
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("key: "):
            return f"{n}:{line.index('key: ') + 6}"
    raise AssertionError(text)


def pin_position(text: str) -> str:
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("key_pin_file: "):
            return f"{n}:{line.index('key_pin_file: ') + 15}"
    raise AssertionError(text)


def test_check_accepts_a_good_pkcs11_key(mtlsd_bin, pki, token, tmp_path):
    path, _ = check_config(tmp_path, pki, pkcs11_tls(token, "server", "server.crt", pki))
    proc = run_cli(mtlsd_bin, "check", "--config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ["no_token", "wrong_pin", "no_object", "mismatch", "no_module",
                                  "no_pin"])
def test_check_says_what_is_wrong(mtlsd_bin, pki, token, tmp_path, case):
    tls = pkcs11_tls(token, "server", "server.crt", pki)
    wrong_pin = tmp_path / "wrong.pin"
    wrong_pin.write_text("Wr0ng-pin\n")
    if case == "no_token":
        tls["key"] = token.uri("server", token="nosuch")
    elif case == "wrong_pin":
        tls["key_pin_file"] = str(wrong_pin)
    elif case == "no_object":
        tls["key"] = token.uri("nosuch")
    elif case == "mismatch":
        tls["cert"] = pki.path("client.crt")
    elif case == "no_module":
        tls["key"] = token.uri("server", module="/nonexistent/libpkcs11.so")
    elif case == "no_pin":
        del tls["key_pin_file"]
    path, text = check_config(tmp_path, pki, tls)
    proc = run_cli(mtlsd_bin, "check", "--config", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    at = f"{path}:{key_position(text)}: "
    expected = {
        "no_token": at + f"no PKCS#11 token matches token=nosuch in module {token.module} "
                         "(initialised tokens there: 'mtlsd'); a token whose files mtlsd's user "
                         f"(uid {os.geteuid()}) cannot read is not listed (SoftHSM's token "
                         f"directory: {token.root / 'tokens'})",
        "wrong_pin": lambda: f"{path}:{pin_position(text)}: wrong PIN for PKCS#11 token 'mtlsd' "
                     f"(CKR_PIN_INCORRECT; from key_pin_file {wrong_pin})",
        "no_object": at + "no private key labelled 'nosuch' on PKCS#11 token 'mtlsd' "
                          "(private keys there: 'client', 'rsa', 'server', 'server2')",
        "mismatch": at + f"{tls['key']}: private key does not match the certificate in "
                         f"{pki.path('client.crt')} (CN=client,OU=payments,O=mtlsd Test)",
        "no_module": at + "PKCS#11 module /nonexistent/libpkcs11.so not found or not readable "
                          "(name it with module-path= in the URI or $PKCS11_MODULE_PATH)",
        "no_pin": at + "PKCS#11 token 'mtlsd' needs a PIN: set key_pin_file, or "
                       "pin-source=file:/path in the URI",
    }[case]
    expected = expected() if callable(expected) else expected
    assert expected in out.splitlines(), out
    assert PIN not in out and "Wr0ng-pin" not in out, out  # no PIN in any message


def test_check_reports_a_malformed_uri_at_its_line(mtlsd_bin, pki, token, tmp_path):
    tls = pkcs11_tls(token, "server", "server.crt", pki)
    tls["key"] = "pkcs11:token=mtlsd;objekt=server"
    path, text = check_config(tmp_path, pki, tls)
    proc = run_cli(mtlsd_bin, "check", "--config", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (f"{path}:{key_position(text)}: listeners[0].tls.key: not a usable PKCS#11 URI: "
            "unknown attribute 'objekt'") in out, out


def test_default_module_is_p11_kit_proxy(mtlsd_bin, pki, token, tmp_path):
    """Without module-path= (and $PKCS11_MODULE_PATH) the key is looked up through p11-kit's
    proxy, which offers SoftHSM's token (registered in /usr/share/p11-kit/modules)."""
    tls = pkcs11_tls(token, "server", "server.crt", pki)
    tls["key"] = "pkcs11:token=mtlsd;object=server"
    listener = server_listener(pki, "127.0.0.1:9", tls=tls)
    env_module = os.environ.pop("PKCS11_MODULE_PATH", None)
    try:
        off = write_config(tmp_path / "off.yaml", daemon_config([listener], sandbox=False))
        proc = run_cli(mtlsd_bin, "check", "--config", str(off))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # With the sandbox on, a proxy that starts threads (GLib, when OpenSC is registered with
        # p11-kit) is refused by check as `run` would refuse it.
        on = write_config(tmp_path / "on.yaml", daemon_config([listener]))
        proc = run_cli(mtlsd_bin, "check", "--config", str(on))
        if os.path.exists("/usr/share/p11-kit/modules/opensc-pkcs11.module"):
            assert proc.returncode == 1
            assert f"{on}: PKCS#11 module p11-kit-proxy.so started " in proc.stderr, proc.stderr
            assert (" thread(s) when loaded, so mtlsd run cannot enter the sandbox (it must have "
                    "one thread then)") in proc.stderr, proc.stderr
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        if env_module is not None:
            os.environ["PKCS11_MODULE_PATH"] = env_module
