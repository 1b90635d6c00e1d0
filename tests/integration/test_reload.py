"""Hot reload (issue 4): certificates, trust stores, CRLs and the configuration change under a
running mtlsd, which must pick every change up on its own, never drop a connection, and keep
serving the previous runtime when a change is unusable.

The signals awaited are the daemon's own: one "reloaded" or "reload failed" log line per
attempt, and the counters on /metrics. The only fixed waits are the two that prove something
does *not* happen (no reload without a trigger), each bounded well above the debounce.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import wait_until
from mtlsd_harness import (Mtlsd, Pki, check_sanitizer_reports, client_context, daemon_config,
                           echo_roundtrip, open_tls, parse_address, server_listener,
                           write_config)
from refusal import assert_admitted as admitted

RELOADED = "reloaded"
FAILED = "reload failed; still serving the previous configuration"
OUTCOMES = (RELOADED, FAILED)
# How long a reload may take before a test gives up: a bound for failing, not a measurement (the
# promptness checks are the latency assertions), so generous enough for a busy second core.
RELOAD_TIMEOUT = 15.0
# Longer than the watcher's debounce (150 ms) and a reload, for the "nothing happens" checks.
QUIET = 0.6


# --- PKI: a private copy with extra server certificates -----------------------------------

def _issue_server(p: Pki, name: str, key: str | None = None) -> None:
    """A localhost server certificate from the test root; a fresh key unless `key` is given."""
    keyname = key or name
    if key is None:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", p.path(f"{name}.key")],
                       check=True, capture_output=True, timeout=30)
        os.chmod(p.path(f"{name}.key"), 0o600)
    p.openssl("req", "-new", "-key", p.path(f"{keyname}.key"), "-subj",
              "/O=mtlsd Test/CN=localhost", "-out", p.path(f"{name}.csr"))
    p.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server",
              "-days", "365", "-in", p.path(f"{name}.csr"), "-out", p.path(f"{name}.crt"))


@pytest.fixture(scope="module")
def rpki(pki, tmp_path_factory) -> Pki:
    """server2: another key and certificate; server-b: server.key with a new certificate."""
    mine = pki.copy_to(tmp_path_factory.mktemp("reload") / "pki")
    _issue_server(mine, "server2")
    _issue_server(mine, "server-b", key="server")
    return mine


def cert_serial(path: str | Path) -> int:
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return int(out.strip().split("=", 1)[1], 16)


# --- writing files the ways real tools do -------------------------------------------------

def write_in_place(path: Path, data: bytes) -> None:
    """Truncate and rewrite the same inode (cp, shell redirection, most scripts)."""
    with open(path, "wb") as f:
        f.write(data)


def write_and_rename(path: Path, data: bytes) -> None:
    """Write a temporary file next to it and rename it over (editors, atomic writers)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def install(dest: Path, p: Pki, **files: str) -> dict[str, Path]:
    """Copy PKI files into `dest` under new names: install(d, p, tls_crt="server.crt")."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in files.items():
        target = dest / name.replace("_", ".")
        shutil.copyfile(p.path(src), target)
        os.chmod(target, 0o600)
        out[name] = target
    return out


# --- the daemon -------------------------------------------------------------------------

@pytest.fixture
def start_reloadable(mtlsd_bin, tmp_path, request):
    """start(config, separate_config_dir=False) -> Mtlsd.

    With `separate_config_dir` the YAML lives in its own directory rather than next to the
    daemon's log, so the test fully controls which file events the watcher sees.
    """
    started: list[Mtlsd] = []

    def start(config, separate_config_dir: bool = False) -> Mtlsd:
        daemon = Mtlsd(mtlsd_bin, config, tmp_path / f"run{len(started)}")
        if separate_config_dir:
            daemon.config_path.unlink()
            daemon.config_path = write_config(_mkdir(tmp_path / "conf") / "mtlsd.yaml", config)
        started.append(daemon)
        return daemon.start()
    yield start
    for daemon in started:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print(f"--- mtlsd {daemon.config_path} (exit {daemon.proc and daemon.proc.poll()})")
            print(daemon.output_tail(80))
        daemon.kill()
    check_sanitizer_reports(started)


def _mkdir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def outcomes(daemon: Mtlsd) -> list[dict]:
    return [line for line in daemon.logs() if line.get("msg") in OUTCOMES]


def wait_outcome(daemon: Mtlsd, seen: int, timeout: float = RELOAD_TIMEOUT) -> dict:
    """The first reload outcome after the `seen` ones already logged."""
    found: list[dict] = []

    def arrived() -> bool:
        found[:] = outcomes(daemon)
        return len(found) > seen
    wait_until(arrived, timeout, lambda: f"reload outcome #{seen + 1}; daemon "
               f"{'running' if daemon.running() else 'EXITED'}:\n{daemon.output_tail()}")
    return found[seen]


def expect_reloaded(daemon: Mtlsd, seen: int, **fields) -> dict:
    line = wait_outcome(daemon, seen)
    assert line["msg"] == RELOADED and line.get("result") == "success", line
    assert isinstance(line.get("duration_ms"), int), line
    for key, value in fields.items():
        assert line.get(key) == value, (key, line)
    return line


def expect_failed(daemon: Mtlsd, seen: int, *needles: str) -> dict:
    line = wait_outcome(daemon, seen)
    assert line["msg"] == FAILED, line
    assert line.get("level") == "error" and line.get("result") == "failure", line
    assert isinstance(line.get("duration_ms"), int), line
    for needle in needles:
        assert needle in line.get("error", ""), (needle, line)
    return line


def changed_files(line: dict) -> set[str]:
    return set(filter(None, line.get("files_changed", "").split(",")))


def metric(daemon: Mtlsd, name: str, **labels: str) -> float:
    return daemon.scrape().get(name, **labels)


def reload_counts(daemon: Mtlsd) -> tuple[float, float]:
    return (metric(daemon, "mtlsd_config_reloads_total", result="success"),
            metric(daemon, "mtlsd_config_reloads_total", result="failure"))


def wait_for_check(daemon: Mtlsd, before: float, timeout: float = RELOAD_TIMEOUT) -> None:
    """Until the watcher has looked at the files again and found nothing changed."""
    wait_until(lambda: metric(daemon, "mtlsd_config_file_checks_total",
                              result="unchanged") > before,
               timeout, "the watcher to look at the files")


# --- clients ------------------------------------------------------------------------------

def served_serial(daemon: Mtlsd, p: Pki, cert: str = "client", listener: str = "inbound") -> int:
    """A new connection: round trip through the upstream; returns the server's serial."""
    with open_tls(daemon.addr(listener), client_context(p, cert)) as s:
        serial = int(s.getpeercert()["serialNumber"], 16)
        roundtrip(s, b"serial?\n")
    return serial


def roundtrip(s: ssl.SSLSocket, payload: bytes) -> None:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {got!r}"
        got += chunk
    assert got == payload


def assert_refused(daemon: Mtlsd, p: Pki, cert: str, reason: str) -> None:
    ex = echo_roundtrip(daemon.addr(), client_context(p, cert))
    assert ex.data == b"" and ex.error is not None, f"{cert} was admitted: {ex!r}"
    line = daemon.wait_for_access(client=ex.local)
    assert (line.get("result"), line.get("reason")) == ("rejected", reason), line


def assert_admitted(daemon: Mtlsd, p: Pki, cert: str) -> None:
    """`cert` echoes, and its access line says accepted (refusal.assert_admitted)."""
    admitted(daemon, echo_roundtrip(daemon.addr(), client_context(p, cert)), b"ping\n")


def config_for(p: Pki, upstream: str, certs: dict[str, Path], **top) -> dict:
    listener = server_listener(p, upstream, tls={"cert": str(certs["server_crt"]),
                                                 "key": str(certs["server_key"])},
                               client_auth={"ca": [str(certs["ca_crt"])]})
    return daemon_config([listener], **top)


# --- the tests ------------------------------------------------------------------------------

def test_rotate_server_cert_in_place(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs))
    old, new = cert_serial(rpki.path("server.crt")), cert_serial(rpki.path("server2.crt"))
    held = open_tls(daemon.addr(), client_context(rpki, "client"))
    roundtrip(held, b"before\n")
    assert served_serial(daemon, rpki) == old

    # Certificate and key land milliseconds apart, each rewritten in place: one reload, not a
    # failed one (new cert + old key) followed by a good one. The gap is kept short: a test
    # thread descheduled between the writes for longer than the debounce (150 ms) would see
    # that failed reload by its own doing.
    write_in_place(certs["server_crt"], rpki.read("server2.crt"))
    time.sleep(0.01)  # the gap is the scenario, not a wait for something
    write_in_place(certs["server_key"], rpki.read("server2.key"))
    line = expect_reloaded(daemon, 0, trigger="file_change", listeners_updated="inbound")
    assert changed_files(line) == {str(certs["server_crt"]), str(certs["server_key"])}
    listener, _, serials = line["certificates_rotated"].partition(":")
    assert listener == "inbound"
    assert [int(x, 16) for x in serials.split("->")] == [old, new]

    assert served_serial(daemon, rpki) == new
    # The connection opened before the reload still works, on the old certificate.
    roundtrip(held, b"after\n")
    assert int(held.getpeercert()["serialNumber"], 16) == old
    held.close()
    assert reload_counts(daemon) == (1, 0)
    assert len(outcomes(daemon)) == 1


def test_add_then_remove_a_ca(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs))
    assert_refused(daemon, rpki, "client-other", "unknown_ca")

    write_and_rename(certs["ca_crt"], rpki.read("ca.crt") + rpki.read("other-ca.crt"))
    line = expect_reloaded(daemon, 0)
    assert changed_files(line) == {str(certs["ca_crt"])}
    assert_admitted(daemon, rpki, "client-other")
    assert_admitted(daemon, rpki, "client")

    write_and_rename(certs["ca_crt"], rpki.read("ca.crt"))
    expect_reloaded(daemon, 1)
    assert_refused(daemon, rpki, "client-other", "unknown_ca")
    assert_admitted(daemon, rpki, "client")


def test_replace_crl(start_reloadable, make_upstream, pki, tmp_path):
    mine = pki.copy_to(tmp_path / "pki")  # revokes a certificate: keep it out of shared PKIs
    certs = install(tmp_path / "certs", mine, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt", crl_pem="crl.pem")
    config = config_for(mine, make_upstream().address, certs)
    config["listeners"][0]["revocation"] = {"crl_files": [str(certs["crl_pem"])]}
    daemon = start_reloadable(config)
    assert_admitted(daemon, mine, "client2")
    assert_refused(daemon, mine, "client-revoked", "revoked")

    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", mine.path("client2.crt"))
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl2.pem"))
    write_and_rename(certs["crl_pem"], mine.read("crl2.pem"))
    line = expect_reloaded(daemon, 0)
    assert changed_files(line) == {str(certs["crl_pem"])}
    assert_refused(daemon, mine, "client2", "revoked")
    assert_refused(daemon, mine, "client-revoked", "revoked")
    assert_admitted(daemon, mine, "client")


def _kubelet_payload(secret: Path, p: Pki, crt: str, key: str, stamp: int) -> str:
    """Step 1 of the kubelet's atomic writer: a new timestamped directory with the files."""
    name = f"..2026_01_01_00_00_0{stamp}.{stamp:09d}"
    payload = secret / name
    payload.mkdir()
    for target, src in (("tls.crt", crt), ("tls.key", key), ("ca.crt", "ca.crt")):
        (payload / target).write_bytes(p.read(src))
        os.chmod(payload / target, 0o600)
    return name


def _kubelet_swap(secret: Path, new_dir: str) -> None:
    """Steps 2-4: `..data_tmp` -> new dir, renamed over `..data`, then the old dir removed."""
    old_dir = os.readlink(secret / "..data")
    os.symlink(new_dir, secret / "..data_tmp")
    os.rename(secret / "..data_tmp", secret / "..data")
    shutil.rmtree(secret / old_dir)


def test_kubernetes_secret_volume_swap(start_reloadable, make_upstream, rpki, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    first = _kubelet_payload(secret, rpki, "server.crt", "server.key", 1)
    os.symlink(first, secret / "..data_tmp")
    os.rename(secret / "..data_tmp", secret / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):  # the user-visible links, made once
        os.symlink(f"..data/{name}", secret / name)
    certs = {"server_crt": secret / "tls.crt", "server_key": secret / "tls.key",
             "ca_crt": secret / "ca.crt"}
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs))
    held = open_tls(daemon.addr(), client_context(rpki, "client"))
    roundtrip(held, b"before\n")
    serials = [cert_serial(rpki.path(c)) for c in ("server.crt", "server2.crt")]
    assert served_serial(daemon, rpki) == serials[0]

    # Swap twice: the second proves the watches were re-armed after the first swap deleted
    # the directory the files used to resolve into.
    for n, (crt, key, serial) in enumerate([("server2.crt", "server2.key", serials[1]),
                                            ("server.crt", "server.key", serials[0])]):
        _kubelet_swap(secret, _kubelet_payload(secret, rpki, crt, key, n + 2))
        line = expect_reloaded(daemon, n)
        # Only the CA bundle's content did not change.
        assert changed_files(line) == {str(secret / "tls.crt"), str(secret / "tls.key")}
        assert served_serial(daemon, rpki) == serial
        roundtrip(held, b"still here\n")
    held.close()
    assert reload_counts(daemon) == (2, 0)


BAD_KEY = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("breakage", ["corrupt_key", "key_does_not_match", "expired_cert", "fifo",
                                      "invalid_yaml"])
def test_unusable_change_keeps_serving_then_recovers(start_reloadable, make_upstream, rpki,
                                                     tmp_path, breakage):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    config = config_for(rpki, make_upstream().address, certs)
    daemon = start_reloadable(config)
    old, new = cert_serial(rpki.path("server.crt")), cert_serial(rpki.path("server2.crt"))
    held = open_tls(daemon.addr(), client_context(rpki, "client"))
    roundtrip(held, b"before\n")

    if breakage == "corrupt_key":
        write_in_place(certs["server_key"], BAD_KEY)
        expect_failed(daemon, 0, f"{certs['server_key']}:", "no private key found")
    elif breakage == "key_does_not_match":
        write_and_rename(certs["server_key"], rpki.read("server2.key"))
        expect_failed(daemon, 0, f"{certs['server_key']}: private key does not match the "
                                 f"certificate in {certs['server_crt']}")
    elif breakage == "expired_cert":
        # A matching pair, but expired: the same validity check as `mtlsd check`.
        write_and_rename(certs["server_crt"], rpki.read("client-expired.crt"))
        write_and_rename(certs["server_key"], rpki.read("client-expired.key"))
        expect_failed(daemon, 0, f"{certs['server_crt']}: certificate ", " expired at ")
    elif breakage == "fifo":
        # Review: a FIFO in place of a watched file blocked the control thread in its read for
        # good (no admin answers, SIGTERM ignored). It is named and never read.
        os.remove(certs["ca_crt"])
        os.mkfifo(certs["ca_crt"])
        expect_failed(daemon, 0, f"{certs['ca_crt']}:", "not a regular file")
        assert daemon.admin_request("/healthz").status == 200
    else:
        daemon.config_path.write_text("listeners:\n  - name: inbound\n   mode: [server\n")
        expect_failed(daemon, 0, f"{daemon.config_path}:", "YAML syntax error")

    assert reload_counts(daemon) == (0, 1)
    # The previous runtime serves on, new connections and old.
    assert served_serial(daemon, rpki) == old
    roundtrip(held, b"during\n")

    # The next good write recovers.
    if breakage == "invalid_yaml":
        # New files, but in the directory the configuration named at start-up: one outside it
        # would need a restart under the sandbox (test_sandbox.py).
        fresh = install(certs["server_crt"].parent, rpki, server2_crt="server2.crt",
                        server2_key="server2.key")
        config["listeners"][0]["tls"] = {"cert": str(fresh["server2_crt"]),
                                         "key": str(fresh["server2_key"])}
        write_config(daemon.config_path, config)
    else:
        if breakage == "fifo":
            write_and_rename(certs["ca_crt"], rpki.read("ca.crt"))
        write_and_rename(certs["server_crt"], rpki.read("server2.crt"))
        if breakage in ("corrupt_key", "expired_cert", "fifo"):
            write_and_rename(certs["server_key"], rpki.read("server2.key"))
    expect_reloaded(daemon, 1)
    assert served_serial(daemon, rpki) == new
    roundtrip(held, b"after\n")
    held.close()
    assert reload_counts(daemon) == (1, 1)
    assert len(outcomes(daemon)) == 2


def test_add_and_remove_a_listener(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    main_up, extra_up = make_upstream(), make_upstream()
    config = config_for(rpki, main_up.address, certs)
    daemon = start_reloadable(config)
    held = open_tls(daemon.addr(), client_context(rpki, "client"))
    roundtrip(held, b"before\n")

    extra = dict(config["listeners"][0], name="extra", upstream=extra_up.address)
    write_config(daemon.config_path, dict(config, listeners=[config["listeners"][0], extra]))
    expect_reloaded(daemon, 0, listeners_started="extra", listeners_updated="inbound",
                    listeners_stopped="")
    bound = daemon.wait_for_log(lambda l: l.get("msg") == "listening"
                                and l.get("listener") == "extra")
    extra_addr = parse_address(bound["address"])
    assert echo_roundtrip(extra_addr, client_context(rpki, "client")).data == b"ping\n"
    assert extra_up.connection_count() == 1

    write_config(daemon.config_path, config)
    expect_reloaded(daemon, 1, listeners_stopped="extra", listeners_started="",
                    listeners_updated="inbound")
    def refused() -> bool:  # the workers close their acceptors right after the log line
        try:
            socket.create_connection(extra_addr, timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False
    wait_until(refused, RELOAD_TIMEOUT, "the removed listener to stop accepting")
    roundtrip(held, b"after\n")
    held.close()
    assert_admitted(daemon, rpki, "client")


def test_sighup_reloads_when_watching_is_off(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs,
                                         reload={"watch": False}))
    write_and_rename(certs["server_crt"], rpki.read("server2.crt"))
    write_and_rename(certs["server_key"], rpki.read("server2.key"))
    time.sleep(QUIET)  # watch: false means no reload on its own
    assert outcomes(daemon) == []
    assert served_serial(daemon, rpki) == cert_serial(rpki.path("server.crt"))

    daemon.send_signal(signal.SIGHUP)
    line = expect_reloaded(daemon, 0, trigger="SIGHUP")
    assert changed_files(line) == {str(certs["server_crt"]), str(certs["server_key"])}
    assert served_serial(daemon, rpki) == cert_serial(rpki.path("server2.crt"))


def test_poll_interval_without_inotify(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs,
                                         reload={"watch": False, "poll_interval": "100ms"}))
    write_in_place(certs["server_crt"], rpki.read("server-b.crt"))  # same key
    line = expect_reloaded(daemon, 0, trigger="poll")
    assert changed_files(line) == {str(certs["server_crt"])}
    assert served_serial(daemon, rpki) == cert_serial(rpki.path("server-b.crt"))


def test_events_without_content_change_do_not_reload(start_reloadable, make_upstream, rpki,
                                                      tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs),
                              separate_config_dir=True)
    checks = metric(daemon, "mtlsd_config_file_checks_total", result="unchanged")
    # Touch, rewrite identically, chmod, an editor's swap file, an unrelated file in the
    # config's directory: all events in watched directories, none a change of content.
    os.utime(certs["server_crt"])
    write_in_place(certs["server_key"], rpki.read("server.key"))
    write_and_rename(certs["ca_crt"], rpki.read("ca.crt"))
    os.chmod(certs["server_key"], 0o400)
    (certs["server_crt"].parent / ".server.crt.swp").write_bytes(b"x")
    (certs["server_crt"].parent / ".server.crt.swp").unlink()
    (daemon.config_path.parent / "notes.txt").write_text("unrelated")
    wait_for_check(daemon, checks)
    time.sleep(QUIET)  # and no reload follows later either
    assert outcomes(daemon) == []
    assert reload_counts(daemon) == (0, 0)

    write_and_rename(certs["server_crt"], rpki.read("server-b.crt"))
    line = expect_reloaded(daemon, 0)
    assert changed_files(line) == {str(certs["server_crt"])}
    assert len(outcomes(daemon)) == 1


def test_a_log_written_next_to_the_config_schedules_no_check(start_reloadable, make_upstream,
                                                              rpki, tmp_path):
    """Review: mtlsd's own access log next to the configuration made each batch of its lines an
    event in a watched directory, and each such event a check that re-read and hashed every
    watched file (CRLs up to 10 MiB): about 6 a second under light load. Writes to a file that
    is not tracked schedule nothing now; a new entry in the directory still does."""
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    access_log = _mkdir(tmp_path / "conf") / "access.log"
    access_log.touch()  # made by mtlsd, it would be a new entry: a check, rightly
    daemon = start_reloadable(config_for(rpki, make_upstream().address, certs,
                                         log={"access_log_path": "access.log"}),
                              separate_config_dir=True)
    assert daemon.config_path.parent == access_log.parent
    checks = metric(daemon, "mtlsd_config_file_checks_total", result="unchanged")
    for _ in range(5):
        served_serial(daemon, rpki)
    wait_until(lambda: access_log.read_text().count("\n") >= 5, what="five access lines")
    time.sleep(QUIET)  # a check would follow its event by the 150 ms debounce
    assert metric(daemon, "mtlsd_config_file_checks_total", result="unchanged") == checks
    (daemon.config_path.parent / "notes.txt").write_text("unrelated")
    wait_for_check(daemon, checks)


def test_files_that_do_not_exist_yet(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    config = config_for(rpki, make_upstream().address, certs)
    daemon = start_reloadable(config, separate_config_dir=True)

    # Point at a directory that does not exist yet: refused, old runtime serves on.
    later = tmp_path / "certs" / "later" / "deeper"
    config["listeners"][0]["tls"] = {"cert": str(later / "tls.crt"), "key": str(later / "tls.key")}
    write_config(daemon.config_path, config)
    expect_failed(daemon, 0, f"{later / 'tls.crt'}:", "No such file or directory")
    assert served_serial(daemon, rpki) == cert_serial(rpki.path("server.crt"))

    # Create the directories one level at a time, each time waiting until the watcher has
    # looked (and re-armed one level deeper). Then the files land where only a watch on the
    # new directory can see them: nothing else in any watched directory changes.
    for d in (later.parent, later):
        checks = metric(daemon, "mtlsd_config_file_checks_total", result="unchanged")
        d.mkdir()
        wait_for_check(daemon, checks)
    assert len(outcomes(daemon)) == 1
    install(later, rpki, tls_crt="server2.crt", tls_key="server2.key")
    line = expect_reloaded(daemon, 1)
    assert changed_files(line) == {str(later / "tls.crt"), str(later / "tls.key")}
    assert served_serial(daemon, rpki) == cert_serial(rpki.path("server2.crt"))
    assert reload_counts(daemon) == (1, 1)


def test_twenty_reloads_under_load_drop_nothing(start_reloadable, make_upstream, rpki, tmp_path):
    certs = install(tmp_path / "certs", rpki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    upstream = make_upstream()
    # The config sits next to the access log, which grows with every connection: reloads must
    # still happen promptly in a directory that never stops changing.
    daemon = start_reloadable(config_for(rpki, upstream.address, certs))
    serials = {cert_serial(rpki.path(c)): c for c in ("server.crt", "server-b.crt")}
    ctx = client_context(rpki, "client")
    stop = threading.Event()
    lock = threading.Lock()
    ok: list[int] = []
    failed: list[str] = []

    def client_loop(worker: int) -> None:
        n = 0
        while not stop.is_set():
            payload = f"w{worker}-{n}\n".encode()
            n += 1
            try:
                with open_tls(daemon.addr(), ctx, timeout=5) as s:
                    serial = int(s.getpeercert()["serialNumber"], 16)
                    roundtrip(s, payload)
                with lock:
                    ok.append(serial)
            except Exception as exc:  # any failure at all is what this test exists to catch
                with lock:
                    failed.append(f"{payload!r}: {exc!r}")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(ok) >= 10, RELOAD_TIMEOUT, "the first connections")
        latencies = []
        for i in range(20):
            name = "server-b.crt" if i % 2 == 0 else "server.crt"
            before = len(ok)
            written = time.monotonic()
            write_and_rename(certs["server_crt"], rpki.read(name))
            expect_reloaded(daemon, i)
            latencies.append(time.monotonic() - written)
            # Let some connections run on each certificate before the next swap.
            wait_until(lambda: len(ok) >= before + 3, RELOAD_TIMEOUT, "connections after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert failed == [], f"{len(failed)} of {len(failed) + len(ok)} connections failed: {failed[:5]}"
    assert len(ok) >= 10 + 20 * 3  # what the waits above guarantee
    assert set(ok) == set(serials), "clients did not see both certificates"
    # Every connection made it through to the upstream and back.
    assert upstream.connection_count() == len(ok)
    assert reload_counts(daemon) == (20, 0)
    # The debounce (150 ms) is not pushed back by the access log growing next to the config;
    # if it were, each reload would wait for the watcher's 1 s cap (1 s plus the reload). The
    # rest of the second is for a reload by a slow (sanitized, busy) daemon under this load.
    assert sorted(latencies)[len(latencies) // 2] < 1.0, latencies
    assert [line["msg"] for line in outcomes(daemon)] == ["reloaded"] * 20
    assert daemon.access_logs(result="rejected") == []
    assert daemon.access_logs(result="error") == []


def test_a_reload_logs_the_new_configurations_warnings(start_mtlsd, make_upstream, pki):
    """A configuration that loads with a warning (a bare trust domain under uri_sans) says so
    on a reload as it does at startup: once the new configuration serves, not before."""
    up = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, up.address)]))
    bare = {"allow": {"rules": [{"uri_sans": ["spiffe://example.org"]}]}}
    mark = daemon.log_mark()
    write_config(daemon.config_path,
                 daemon_config([server_listener(pki, up.address, client_auth=bare)]))
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == RELOADED, since=mark)
    warned = [l for l in daemon.logs()[mark:]
              if l.get("level") == "warn" and "spiffe://example.org" in l.get("msg", "")]
    assert len(warned) == 1, warned
    assert f"{daemon.config_path}:" in warned[0]["msg"], warned[0]  # FILE:LINE:COL
    assert "warning: " in warned[0]["msg"], warned[0]


def test_a_setting_only_a_restart_applies_is_warned_of_until_it_is_set_back(start_mtlsd,
                                                                            make_upstream, pki):
    """`workers` changed by a reload is warned of (it takes effect after a restart), again at
    each reload while it differs from what runs, and no longer once it is set back (review: a
    reload setting it back to the running count still warned)."""
    up = make_upstream()
    listeners = [server_listener(pki, up.address)]
    daemon = start_mtlsd(daemon_config(listeners, workers=1))

    def reload_warns(workers: int) -> bool:
        mark = daemon.log_mark()
        write_config(daemon.config_path, daemon_config(listeners, workers=workers))
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log(lambda l: l.get("msg") == RELOADED, since=mark)
        return any("'workers' changed" in l.get("msg", "") for l in daemon.logs()[mark:])

    assert reload_warns(2)
    assert reload_warns(2)  # still not what runs
    assert not reload_warns(1)


def test_workers_set_to_the_count_auto_chose_is_no_change(start_mtlsd, make_upstream, pki):
    """Started with workers: 0 (one per core), a reload naming that count changes nothing
    (review: it was warned of, compared with the 0 as written)."""
    up = make_upstream()
    listeners = [server_listener(pki, up.address)]
    daemon = start_mtlsd(daemon_config(listeners, workers=0))
    mark = daemon.log_mark()
    write_config(daemon.config_path, daemon_config(listeners, workers=os.cpu_count()))
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda l: l.get("msg") == RELOADED, since=mark)
    assert not [l for l in daemon.logs()[mark:] if "'workers' changed" in l.get("msg", "")]
