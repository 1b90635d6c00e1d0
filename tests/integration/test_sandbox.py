"""The sandbox (issue 11): after start-up mtlsd runs with no_new_privs, no capabilities, a seccomp
filter that kills it on any system call outside its policy, and (where the kernel has it) Landlock
limiting file access to the directories its configuration names.

What is checked here is what the kernel reports in /proc/PID/status and what the daemon can and
cannot do afterwards. That every other feature still works inside the sandbox is checked by the
rest of the suite, which runs with it on (the default): a missing system call kills the daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
from pathlib import Path

import pytest

from helpers import reload_with
from mtlsd_harness import (Mtlsd, check_sanitizer_reports, client_context, daemon_config,
                           echo_roundtrip, open_tls, server_listener, write_config)

FAILED = "reload failed; still serving the previous configuration"
RELOADED = "reloaded"


def status(pid: int, task: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def tasks(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def start(mtlsd_bin: str, config: dict, workdir: Path, started: list) -> Mtlsd:
    daemon = Mtlsd(mtlsd_bin, config, workdir)
    started.append(daemon)
    return daemon.start()


@pytest.fixture
def started():
    """Daemons a test starts itself (not through start_mtlsd): killed, and their sanitizer
    reports checked, at teardown."""
    daemons: list[Mtlsd] = []
    yield daemons
    for d in daemons:
        d.kill()
    check_sanitizer_reports(daemons)


def sandbox_line(daemon: Mtlsd) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") == "sandbox on")


def outcome(daemon: Mtlsd, seen: int) -> dict:
    """The reload outcome number `seen` + 1 (0-based count of those already logged)."""
    found: list[dict] = []

    def arrived(_line: dict) -> bool:
        found[:] = [l for l in daemon.logs() if l.get("msg") in (RELOADED, FAILED)]
        return len(found) > seen
    daemon.wait_for_log(arrived)
    return found[seen]


def served_serial(daemon: Mtlsd, pki) -> int:
    """The serial of the certificate the daemon serves, read on a new connection."""
    with open_tls(daemon.addr(), client_context(pki, "client")) as s:
        return int(s.getpeercert()["serialNumber"], 16)


def admitted(daemon: Mtlsd, pki, listener: str = "inbound") -> None:
    ex = echo_roundtrip(daemon.addr(listener), client_context(pki, "client"))
    assert ex.error is None and ex.data == b"ping\n", f"not served: {ex!r}"


def install(dest: Path, pki, **files: str) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in files.items():
        target = dest / name.replace("_", ".")
        shutil.copyfile(pki.path(src), target)
        out[name] = target
    return out


def listener_for(pki, upstream: str, crt: Path, key: Path, ca: Path) -> dict:
    return server_listener(pki, upstream, tls={"cert": str(crt), "key": str(key)},
                           client_auth={"ca": [str(ca)]})


# --- what the kernel says -------------------------------------------------------------------

def test_on_by_default_in_every_thread(mtlsd_bin, pki, make_upstream, tmp_path, started):
    ours = status(os.getpid())
    daemon = start(mtlsd_bin, daemon_config([server_listener(pki, make_upstream().address)]),
                   tmp_path / "run", started)
    admitted(daemon, pki)  # a served connection: the workers ran inside the filter
    line = sandbox_line(daemon)
    assert line["capabilities"] == "none" and line["seccomp_syscalls"] > 50, line
    # Every thread (control, workers, revocation service): the sandbox was entered before any
    # of them started, so all carry it, not just the one /proc/PID/status shows.
    threads = tasks(daemon.pid)
    assert len(threads) >= 4, threads  # control + 2 workers + revocation
    for tid in threads:
        st = status(daemon.pid, tid)
        assert st["NoNewPrivs"] == "1", (tid, st)
        assert st["Seccomp"] == "2", (tid, st)
        if "Seccomp_filters" in st:  # one more filter than the process that started us
            assert int(st["Seccomp_filters"]) == int(ours.get("Seccomp_filters", "0")) + 1, st
        for caps in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(st[caps], 16) == 0, (tid, caps, st)
        if int(ours["CapEff"], 16) & (1 << 8):  # we have CAP_SETPCAP: the bounding set empties
            assert int(st["CapBnd"], 16) == 0, (tid, st)
    admitted(daemon, pki)


def process_series(daemon: Mtlsd) -> list[str]:
    metrics = daemon.scrape()
    return [k for k in ("process_resident_memory_bytes", "process_open_fds") if metrics.series(k)]


def test_process_metrics_survive_the_kernel_dropping_its_proc_cache(mtlsd_bin, pki,
                                                                    make_upstream, tmp_path,
                                                                    started):
    """Review: Landlock's rule for /proc/PID names an inode, and procfs makes a new one once
    the dentry is evicted (memory pressure; here a cache drop): every read of /proc/self then
    failed, and the process metrics vanished until a restart. mtlsd keeps the dentry pinned."""
    try:
        drop = open("/proc/sys/vm/drop_caches", "w")
    except OSError as e:
        pytest.skip(f"cannot drop the kernel's caches here: {e}")
    daemon = start(mtlsd_bin, daemon_config([server_listener(pki, make_upstream().address)]),
                   tmp_path / "run", started)
    sandbox_line(daemon)
    assert process_series(daemon) == ["process_resident_memory_bytes", "process_open_fds"]
    with drop:
        drop.write("2\n")
    assert process_series(daemon) == ["process_resident_memory_bytes", "process_open_fds"]


def test_sandbox_false_turns_it_off_and_says_so(mtlsd_bin, pki, make_upstream, tmp_path,
                                                started):
    ours = status(os.getpid())
    daemon = start(mtlsd_bin, daemon_config([server_listener(pki, make_upstream().address)],
                                            sandbox=False), tmp_path / "run", started)
    admitted(daemon, pki)
    line = daemon.wait_for_log(lambda l: "sandbox is off" in l.get("msg", ""))
    assert line["level"] == "warn", line
    assert not [l for l in daemon.logs() if l.get("msg") == "sandbox on"]
    st = status(daemon.pid)
    # Exactly what we have ourselves: nothing added.
    for key in ("NoNewPrivs", "Seccomp", "Seccomp_filters", "CapEff", "CapPrm", "CapBnd"):
        if key in ours:
            assert st[key] == ours[key], (key, st[key], ours[key])


# --- reload inside the sandbox --------------------------------------------------------------

def _kubelet_payload(secret: Path, pki, crt: str, key: str, stamp: int) -> str:
    name = f"..2026_01_01_00_00_0{stamp}.{stamp:09d}"
    (secret / name).mkdir()
    for target, src in (("tls.crt", crt), ("tls.key", key), ("ca.crt", "ca.crt")):
        (secret / name / target).write_bytes(pki.read(src))
    return name


def _kubelet_swap(secret: Path, new_dir: str) -> None:
    old = os.readlink(secret / "..data")
    os.symlink(new_dir, secret / "..data_tmp")
    os.rename(secret / "..data_tmp", secret / "..data")
    shutil.rmtree(secret / old)


def test_reload_of_changed_certificate_works_inside_the_sandbox(mtlsd_bin, pki, make_upstream,
                                                                 tmp_path, started):
    """A Kubernetes secret volume: `..data` swapped to a directory created after start-up."""
    mine = pki.copy_to(tmp_path / "pki")
    mine.openssl("req", "-new", "-key", mine.path("server.key"), "-subj",
                 "/O=mtlsd Test/CN=localhost", "-out", mine.path("server-b.csr"))
    mine.openssl("ca", "-batch", "-notext", "-name", "root_ca", "-extensions", "ext_server",
                 "-days", "365", "-in", mine.path("server-b.csr"), "-out",
                 mine.path("server-b.crt"))
    secret = tmp_path / "secret"
    secret.mkdir()
    first = _kubelet_payload(secret, mine, "server.crt", "server.key", 1)
    os.symlink(first, secret / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        os.symlink(f"..data/{name}", secret / name)
    daemon = start(mtlsd_bin, daemon_config([listener_for(
        mine, make_upstream().address, secret / "tls.crt", secret / "tls.key",
        secret / "ca.crt")]), tmp_path / "run", started)
    sandbox_line(daemon)
    before = served_serial(daemon, mine)

    _kubelet_swap(secret, _kubelet_payload(secret, mine, "server-b.crt", "server.key", 2))
    line = outcome(daemon, 0)
    assert line["msg"] == RELOADED, line
    after = served_serial(daemon, mine)
    want = int(ssl._ssl._test_decode_cert(mine.path("server-b.crt"))["serialNumber"], 16)
    assert after != before and after == want, (before, after, want)
    assert status(daemon.pid)["Seccomp"] == "2"


def test_reload_naming_a_path_outside_needs_a_restart(mtlsd_bin, pki, make_upstream, tmp_path,
                                                      started):
    certs = install(tmp_path / "certs", pki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    elsewhere = install(tmp_path / "elsewhere", pki, ca_crt="ca.crt")
    upstream = make_upstream().address
    config = daemon_config([listener_for(pki, upstream, certs["server_crt"],
                                         certs["server_key"], certs["ca_crt"])])
    daemon = start(mtlsd_bin, config, tmp_path / "run", started)
    sandbox_line(daemon)
    admitted(daemon, pki)

    moved = daemon_config([listener_for(pki, upstream, certs["server_crt"], certs["server_key"],
                                        elsewhere["ca_crt"])])
    reload_with(daemon, moved, wait=False)  # it fails: outcome() reads why
    line = outcome(daemon, 0)
    assert line["msg"] == FAILED, line
    assert "needs a restart" in line["error"] and str(elsewhere["ca_crt"]) in line["error"], line
    assert daemon.running()
    admitted(daemon, pki)  # the old configuration keeps serving

    # The same change is fine without the sandbox: the refusal above was the sandbox's.
    free = start(mtlsd_bin, daemon_config(config["listeners"], sandbox=False),
                 tmp_path / "run-free", started)
    reload_with(free, daemon_config(moved["listeners"], sandbox=False))
    assert outcome(free, 0)["msg"] == RELOADED
    admitted(free, pki)


def test_landlock_denies_reading_outside_the_allowed_dirs(mtlsd_bin, pki, make_upstream,
                                                          tmp_path, started):
    """The configuration file is a symlink (a ConfigMap); re-pointed at a directory outside the
    sandbox, mtlsd can no longer open it: the kernel, not mtlsd's own check, refuses."""
    upstream = make_upstream().address
    certs = install(tmp_path / "certs", pki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")

    def run(sandbox: bool, name: str) -> Mtlsd:
        config = daemon_config([listener_for(pki, upstream, certs["server_crt"],
                                             certs["server_key"], certs["ca_crt"])],
                               sandbox=sandbox)
        daemon = Mtlsd(mtlsd_bin, config, tmp_path / name)
        real = daemon.config_path.with_name("v1.yaml")
        daemon.config_path.rename(real)
        daemon.config_path.symlink_to(real)
        started.append(daemon)
        daemon.start()
        outside = tmp_path / f"{name}-elsewhere"
        outside.mkdir()
        write_config(outside / "v2.yaml", daemon_config(config["listeners"], sandbox=sandbox,
                                                        workers=1))
        tmp_link = daemon.config_path.with_name("link.tmp")
        tmp_link.symlink_to(outside / "v2.yaml")
        tmp_link.rename(daemon.config_path)
        daemon.send_signal(signal.SIGHUP)
        return daemon

    probe = run(True, "sandboxed")
    abi = sandbox_line(probe)["landlock_abi"]
    if abi == 0:
        pytest.skip("this kernel has no Landlock (mtlsd logged landlock_abi 0): file access is "
                    "not restricted here, so there is nothing to check")
    line = outcome(probe, 0)
    assert line["msg"] == FAILED, line
    assert "cannot read configuration file: Permission denied" in line["error"], line
    admitted(probe, pki)

    control = run(False, "unsandboxed")
    assert outcome(control, 0)["msg"] == RELOADED


def test_a_certificate_directory_replaced_after_start_needs_a_restart_and_says_so(
        mtlsd_bin, pki, make_upstream, tmp_path, started):
    """Review: Landlock holds the directory it was given at start, not its path. After
    `mv certs certs.old && mv certs.new certs` (or `rm -rf certs` and a new one) a reload failed
    with "cannot read certificate: Permission denied" on a readable file, and never recovered.
    The reload now says the directory was replaced and the change needs a restart; the old
    certificate keeps serving."""
    certs = install(tmp_path / "certs", pki, server_crt="server.crt", server_key="server.key",
                    ca_crt="ca.crt")
    config = daemon_config([listener_for(pki, make_upstream().address, certs["server_crt"],
                                         certs["server_key"], certs["ca_crt"])])
    daemon = start(mtlsd_bin, config, tmp_path / "run", started)
    if sandbox_line(daemon)["landlock_abi"] == 0:
        pytest.skip("this kernel has no Landlock: a replaced directory stays readable here")
    admitted(daemon, pki)
    install(tmp_path / "certs.new", pki, server_crt="server.crt", server_key="server.key",
            ca_crt="ca.crt")
    (tmp_path / "certs").rename(tmp_path / "certs.old")
    (tmp_path / "certs.new").rename(tmp_path / "certs")
    daemon.send_signal(signal.SIGHUP)
    line = outcome(daemon, 0)
    assert line["msg"] == FAILED, line
    assert f"is in {tmp_path / 'certs'}, which is not the directory it was when mtlsd started" \
        in line["error"], line
    assert "needs a restart" in line["error"], line
    admitted(daemon, pki)


def free_privileged_port() -> int:
    import socket
    for port in range(600, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 takes root here")
def test_a_reload_that_binds_a_privileged_port_anew_says_it_needs_a_restart(
        mtlsd_bin, pki, make_upstream, tmp_path, started):
    """Review: writing a listener's address on a port below 1024 differently binds anew, which
    needs the CAP_NET_BIND_SERVICE mtlsd gave up after start: the reload failed with a bare
    "Permission denied". The error says what to do now; the old listener keeps serving. A rename
    at the address as written keeps the listener's sockets, so it needs nothing."""
    upstream = make_upstream().address
    port = free_privileged_port()
    listen = f"127.0.0.1:{port}"
    daemon = start(mtlsd_bin, daemon_config([server_listener(pki, upstream, name="a",
                                                             listen=listen)]),
                   tmp_path / "run", started)
    sandbox_line(daemon)
    admitted(daemon, pki, "a")
    reload_with(daemon, daemon_config([server_listener(pki, upstream, name="b", listen=listen)]))
    ex = echo_roundtrip(daemon.addr("a"), client_context(pki, "client"))  # the same address
    assert ex.error is None, ex
    assert daemon.wait_for_access(client=ex.local)["listener"] == "b"
    mark = daemon.log_mark()
    reload_with(daemon, daemon_config([server_listener(pki, upstream, name="b",
                                                       listen=f"localhost:{port}")]),
                wait=False)  # it fails
    line = daemon.wait_for_log(lambda l: l.get("msg") == FAILED, since=mark)
    assert "Permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE" in line["error"], line
    assert "needs a restart" in line["error"], line
    admitted(daemon, pki, "a")  # the address as listener "a" logged it: "b" serves it
