"""Reading the configuration and the files it names (review of config loading):

- a relative --config is resolved once, at start: a reload still reads it after the working
  directory was removed (it ended the process on SIGHUP, and failed uncounted on a file change);
- every read is bounded (README: file size caps): a stream that does not end (/dev/zero, a FIFO)
  or a file past the cap is refused with a diagnostic naming it and the cap, never read until
  memory runs out, at `check` and at a reload, which keeps serving;
- a password pasted where its file's path belongs is never echoed by the error that the file
  cannot be read (check, start-up, reload, and a PKCS#11 key's key_pin_file).
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import reload_with, wait_until
from mtlsd_harness import (Mtlsd, check_sanitizer_reports, client_context, daemon_config,
                           echo_roundtrip, run_cli, server_listener, write_config)
from test_pkcs11 import Token, pkcs11_tls

SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"
RELOADED = "reloaded"
FAILED = "reload failed; still serving the previous configuration"
# What the binary before the fix logged when a file-change reload threw.
THREW = "reload after a file change failed unexpectedly"
OUTCOMES = (RELOADED, FAILED, THREW)
MIB = 1024 * 1024
CONFIG_CAP = 16 * MIB
CAPS = {"ca": 16 * MIB, "crl": 10 * MIB}  # certificates and bundles; a CRL file (as a download)
NOT_SHOWN = "its path is not shown, as it may be a pasted secret"


def outcome_after(daemon: Mtlsd, mark: int) -> dict:
    """The first reload outcome logged after log line `mark` (fails if the daemon exits)."""
    return daemon.wait_for_log(lambda l: l.get("msg") in OUTCOMES, timeout=15, since=mark)


def reload_counts(daemon: Mtlsd) -> tuple[float, float, float]:
    m = daemon.scrape()
    return (m.get("mtlsd_config_reloads_total", result="success"),
            m.get("mtlsd_config_reloads_total", result="failure"),
            m.get("mtlsd_config_last_reload_successful"))


def ready_after_reloading(daemon: Mtlsd) -> bool:
    """Whether the daemon told its supervisor READY=1 after its last RELOADING=1."""
    notes = [m.split("\n") for m in daemon.notifications]
    last = max((i for i, m in enumerate(notes) if "RELOADING=1" in m), default=None)
    return last is not None and any("READY=1" in m for m in notes[last + 1:])


def serves(daemon: Mtlsd, pki) -> bool:
    return echo_roundtrip(daemon.addr(), client_context(pki, "client")).data == b"ping\n"


def padded(data: bytes, size: int) -> bytes:
    """`data` followed by lines of text that are no PEM block, to `size` bytes in all."""
    line = b"x" * 1023 + b"\n"
    rest = size - len(data) - 1
    return data + b"\n" + line * (rest // len(line)) + b"y" * (rest % len(line))


# --- F1: a relative --config, the working directory removed ------------------------------

@pytest.mark.parametrize("trigger", ["SIGHUP", "file_change"])
def test_relative_config_reloads_after_the_working_directory_is_gone(
        mtlsd_bin, pki, make_upstream, tmp_path, trigger):
    config = daemon_config([server_listener(pki, make_upstream().address)])
    daemon = Mtlsd(mtlsd_bin, config, tmp_path / "run")  # writes run/mtlsd.yaml
    scratch = tmp_path / "run" / "cwd"
    scratch.mkdir()
    absolute = daemon.config_path
    daemon.workdir, daemon.config_path = scratch, Path("../mtlsd.yaml")  # `run -c ../mtlsd.yaml`
    try:
        daemon.start()
        daemon.config_path = absolute
        scratch.rmdir()
        assert serves(daemon, pki)
        mark = daemon.log_mark()
        changed = daemon_config([server_listener(pki, config["listeners"][0]["upstream"])],
                                shutdown={"drain_timeout": "6s"})
        if trigger == "SIGHUP":
            daemon.send_signal(signal.SIGHUP)
        else:
            write_config(absolute, changed)
        line = outcome_after(daemon, mark)
        assert line["msg"] == RELOADED and line.get("trigger") == trigger, line
        assert daemon.running()
        assert reload_counts(daemon) == (1, 0, 1)
        wait_until(lambda: ready_after_reloading(daemon), 10, "READY=1 after RELOADING=1")
        assert serves(daemon, pki)
        if trigger == "SIGHUP":  # and the next change of the file is read too
            mark = daemon.log_mark()
            write_config(absolute, changed)
            line = outcome_after(daemon, mark)
            assert line["msg"] == RELOADED, line
            assert reload_counts(daemon) == (2, 0, 1)
    finally:
        daemon.kill()
    check_sanitizer_reports([daemon])


# --- F5: bounded reads ----------------------------------------------------------------

def limited_memory() -> None:
    """In the child: a bound on its address space, so that a binary that reads without a bound
    fails at once instead of taking the machine's memory (not under a sanitizer's shadow)."""
    if not SANITIZED:
        resource.setrlimit(resource.RLIMIT_AS, (1536 * MIB, 1536 * MIB))


def check(mtlsd_bin: str, config: str | Path) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run([mtlsd_bin, "check", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL,
                          preexec_fn=limited_memory)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def test_check_of_dev_zero_stops_at_the_cap(mtlsd_bin):
    code, out, took = check(mtlsd_bin, "/dev/zero")
    assert code == 1, out
    assert out.splitlines()[0] == ("/dev/zero: cannot read configuration file: larger than 16 "
                                   "MiB, the most mtlsd reads of a configuration file"), out
    assert took < 20, took


def test_check_of_a_fifo_fed_past_the_cap_stops_there(mtlsd_bin, tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    # Held open for writing (and reading) here: the check never sees an early end of file, and
    # the feeder never blocks for good once the check is gone.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    stop = threading.Event()

    def feed() -> None:
        chunk, sent = b"# padding, not configuration\n" * 2048, 0
        while sent <= CONFIG_CAP + len(chunk) and not stop.is_set():
            try:
                sent += os.write(fd, chunk)
            except BlockingIOError:
                select.select([], [fd], [], 0.05)
        os.close(fd)  # then end of file, for a reader that read it all

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        code, out, took = check(mtlsd_bin, fifo)
    finally:
        stop.set()
        feeder.join(10)
    assert code == 1, out
    assert f"{fifo}: cannot read configuration file: larger than 16 MiB" in out, out
    assert took < 20, took


@pytest.mark.parametrize("kind", ["ca", "crl"])
def test_check_refuses_a_file_past_its_cap(mtlsd_bin, pki, tmp_path, kind):
    cap = CAPS[kind]
    source = pki.read("ca.crt" if kind == "ca" else "crl.pem")
    big = tmp_path / f"big-{kind}.pem"
    big.write_bytes(padded(source, cap + 1))
    over = {"client_auth": {"ca": [str(big)]}} if kind == "ca" else \
        {"revocation": {"crl_files": [str(big)]}}
    cfg = write_config(tmp_path / "big.yaml",
                       daemon_config([server_listener(pki, "127.0.0.1:9", **over)]))
    code, out, _ = check(mtlsd_bin, cfg)
    what = "certificate" if kind == "ca" else "CRL"
    assert code == 1, out
    assert (f"{big}: {what} is larger than {cap // MIB} MiB, the most mtlsd reads of one; "
            "refused") in out, out
    # One byte less is read, and usable.
    big.write_bytes(padded(source, cap))
    code, out, _ = check(mtlsd_bin, cfg)
    assert code == 0, out


def test_reload_refuses_a_ca_file_past_the_cap_and_keeps_serving(start_mtlsd, make_upstream,
                                                                    pki, tmp_path):
    ca = tmp_path / "trust" / "ca.crt"
    ca.parent.mkdir()
    ca.write_bytes(pki.read("ca.crt"))
    daemon = start_mtlsd(daemon_config([server_listener(
        pki, make_upstream().address, client_auth={"ca": [str(ca)]})], reload={"watch": False}))
    assert serves(daemon, pki)
    mark = daemon.log_mark()
    ca.write_bytes(padded(pki.read("ca.crt"), CAPS["ca"] + 1))
    daemon.send_signal(signal.SIGHUP)  # one reload: the file is not watched
    line = outcome_after(daemon, mark)
    assert line["msg"] == FAILED, line
    assert f"{ca}: certificate is larger than 16 MiB" in line["error"], line
    assert reload_counts(daemon)[1:] == (1, 0)
    assert serves(daemon, pki)
    assert daemon.running()


@pytest.mark.skipif(SANITIZED, reason="a sanitizer's shadow memory needs no address-space bound")
def test_check_out_of_memory_is_an_error_not_an_abort(mtlsd_bin, pki, tmp_path):
    """No command ends on an uncaught exception (std::terminate: exit 134 and a core). Out of
    memory is the one a test can cause at will: a bound on the address space a little above what
    a small configuration's check needs, and a configuration under the cap but above that."""
    small = write_config(tmp_path / "small.yaml",
                         daemon_config([server_listener(pki, "127.0.0.1:9")]))
    large = tmp_path / "large.yaml"
    large.write_bytes(small.read_bytes() + (b"#" + b"x" * 1022 + b"\n") * (15 * 1024))

    def run(config: Path, limit: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [mtlsd_bin, "check", "--config", str(config)], capture_output=True, text=True,
            timeout=60, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))

    low, high = 8 * MIB, 1024 * MIB  # what the small check needs, to a MiB
    assert run(small, high).returncode == 0
    while high - low > MIB:
        mid = (low + high) // 2
        low, high = (low, mid) if run(small, mid).returncode == 0 else (mid, high)
    proc = run(large, high + 4 * MIB)
    assert (proc.returncode, proc.stderr) == (1, "mtlsd: internal error: std::bad_alloc\n"), \
        proc


# --- F4: a password pasted where its file's path belongs ---------------------------------

def position(text: str, key: str) -> str:
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(f"{key}: "):
            return f"{n}:{line.index(f'{key}: ') + len(key) + 3}"
    raise AssertionError(f"no {key} in\n{text}")


def pasted_config(pki, upstream: str, key_secret: str, p12_secret: str) -> dict:
    return daemon_config([
        server_listener(pki, upstream, tls={"key": pki.path("server-enc.key"),
                                            "key_password_file": key_secret}),
        server_listener(pki, upstream, name="p12", tls={
            "cert": None, "key": None, "pkcs12": pki.path("server.p12"),
            "pkcs12_password_file": p12_secret})])


def test_pasted_passwords_are_not_in_check_or_startup_output(mtlsd_bin, pki, tmp_path):
    key_secret, p12_secret = "Tr0ub4dor&3-key-5e1f", "Tr0ub4dor&3-p12-9c2a"
    cfg = write_config(tmp_path / "pasted.yaml",
                       pasted_config(pki, "127.0.0.1:9", key_secret, p12_secret))
    text = cfg.read_text()
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert key_secret not in out and p12_secret not in out and "Tr0ub4dor" not in out, out
    for key in ("key_password_file", "pkcs12_password_file"):
        assert (f"{cfg}:{position(text, key)}: {key}: cannot read the password file (No such "
                f"file or directory); {NOT_SHOWN}") in out.splitlines(), out

    daemon = Mtlsd(mtlsd_bin, pasted_config(pki, "127.0.0.1:9", key_secret, p12_secret),
                   tmp_path / "run")
    try:
        daemon.start(wait_ready=False)
        assert daemon.wait_exit() == 1
        log = daemon.stderr_text()
    finally:
        daemon.kill()
    assert "key_password_file: cannot read the password file" in log, log
    assert "Tr0ub4dor" not in log, log


def test_a_pasted_password_is_not_in_the_reload_log(start_mtlsd, make_upstream, pki):
    up = make_upstream()
    right = pki.path("server-enc.pass")
    daemon = start_mtlsd(pasted_config(pki, up.address, right, pki.path("server.p12.pass")))
    mark = daemon.log_mark()
    reload_with(daemon, pasted_config(pki, up.address, "Tr0ub4dor&3-reload-77d0",
                                      pki.path("server.p12.pass")), wait=False)
    line = outcome_after(daemon, mark)
    assert line["msg"] == FAILED, line
    assert "key_password_file: cannot read the password file" in line["error"], line
    assert "Tr0ub4dor" not in daemon.stderr_text()
    assert serves(daemon, pki)


def test_a_pasted_pin_is_not_in_check_output(mtlsd_bin, pki, tmp_path, monkeypatch):
    token = Token(tmp_path / "hsm", pki, objects={"server": "server.key"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    tls = pkcs11_tls(token, "server", "server.crt", pki)
    tls["key_pin_file"] = "Pin-8d21-pasted"
    cfg = write_config(tmp_path / "pin.yaml",
                       daemon_config([server_listener(pki, "127.0.0.1:9", tls=tls)]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Pin-8d21" not in out, out
    assert (f"{cfg}:{position(cfg.read_text(), 'key_pin_file')}: key_pin_file (or the key's "
            f"pin-source): cannot read the PIN file (No such file or directory); {NOT_SHOWN}"
            ) in out.splitlines(), out
