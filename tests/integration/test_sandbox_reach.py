"""What the sandbox keeps out of reach beyond files (review of the sandbox): Landlock's scopes,
no read rule for the Workload API socket's directory, the one /proc/sys file glibc reads, and
the warning that a root mtlsd is not contained against root-only unix sockets.

The kernel's side of the scopes and of fcntl() is in tests/unit/sandbox_test.cpp (a child
process under the real filter and ruleset); here is what the daemon itself does and says.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, server_listener
from test_spiffe import SERVER_ID, spiffe_server_config, svid_client, wait_reloaded
from workload_api import WorkloadApi, der_of, issue_svid

FAILED = "reload failed; still serving the previous configuration"
ROOT_WARNING = "sandbox: mtlsd runs as root (uid 0)"


def sandbox_line(daemon) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") == "sandbox on")


def test_a_file_beside_the_workload_api_socket_is_not_readable(start_mtlsd, make_upstream, pki,
                                                               short_tmp, tmp_path):
    """Review: the directory of the Workload API socket was readable, with everything beneath
    it (unix:/run/agent.sock: all of /run, a service-account token included). Connecting needs
    no file right: the SVID still arrives; a CA beside the socket is out of reach."""
    socket_path = str(short_tmp / "agent.sock")
    beside = short_tmp / "ca.crt"
    shutil.copyfile(pki.path("ca.crt"), beside)
    api = WorkloadApi(socket_path)
    try:
        svid = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(svid, bundle=der_of(pki, "ca"))
        upstream = make_upstream().address
        config = spiffe_server_config(pki, upstream, socket_path)
        plain = server_listener(pki, upstream, name="plain")
        config["listeners"].append(plain)
        daemon = start_mtlsd(config)
        if sandbox_line(daemon)["landlock_abi"] == 0:
            pytest.skip("this kernel has no Landlock: every file stays readable here")
        wait_reloaded(daemon, svid.serial)
        assert svid_client(pki, daemon.addr())() == svid.serial

        mark = daemon.log_mark()
        plain["client_auth"] = {"ca": [str(beside)]}
        reload_with(daemon, config, wait=False)
        line = daemon.wait_for_log(lambda l: l.get("msg") in ("reloaded", FAILED), since=mark)
        assert line["msg"] == FAILED, line
        assert str(beside) in line["error"] and "needs a restart" in line["error"], line
        assert svid_client(pki, daemon.addr())() == svid.serial  # still served
    finally:
        api.stop()


def test_the_overcommit_mode_is_readable_inside_the_sandbox(start_mtlsd, make_upstream, pki):
    """Review: glibc reads /proc/sys/vm/overcommit_memory when it first trims a thread's arena,
    and took the mode for non-strict when Landlock refused it. Its rule is pinned, as those of
    /proc/self are (the kernel makes a new inode for an evicted /proc dentry): a descriptor of
    mtlsd's holds it."""
    daemon = start_mtlsd(daemon_config([server_listener(pki, make_upstream().address)]))
    if sandbox_line(daemon)["landlock_abi"] == 0:
        pytest.skip("this kernel has no Landlock: nothing is pinned")
    fd_dir = Path(f"/proc/{daemon.pid}/fd")
    held = set()
    for fd in os.listdir(fd_dir):
        try:
            held.add(os.readlink(fd_dir / fd))
        except OSError:
            pass  # closed meanwhile
    assert "/proc/sys/vm/overcommit_memory" in held, sorted(held)


def test_landlock_scopes_and_sd_notify_on_a_path_socket(start_mtlsd, make_upstream, pki,
                                                        short_tmp):
    """Where Landlock has scopes (ABI 6), signals and abstract unix sockets outside the sandbox
    are out of its reach, and sd_notify on a path NOTIFY_SOCKET (systemd's) still works. The
    harness's own NOTIFY_SOCKET is abstract: then only signals are scoped, which mtlsd says."""
    notify_path = str(short_tmp / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)

    def path_notify_socket():
        os.environ["NOTIFY_SOCKET"] = notify_path

    try:
        config = daemon_config([server_listener(pki, make_upstream().address)])
        daemon = start_mtlsd(config, wait_ready=False, preexec_fn=path_notify_socket)
        daemon.wait_for_log(lambda l: l.get("msg") == "ready")
        line = sandbox_line(daemon)
        abi = line["landlock_abi"]
        assert "READY=1" in notify.recv(4096).decode()
        assert line["landlock_scopes"] == ("signal,abstract_unix_socket" if abi >= 6 else ""), line
        assert not [l for l in daemon.logs() if "are not scoped" in l.get("msg", "")]
    finally:
        notify.close()

    harnessed = start_mtlsd(config)  # abstract NOTIFY_SOCKET: READY=1 arrived there
    line = sandbox_line(harnessed)
    assert line["landlock_scopes"] == ("signal" if line["landlock_abi"] >= 6 else ""), line
    if line["landlock_abi"] >= 6:
        assert harnessed.wait_for_log(lambda l: "abstract unix sockets are not scoped" in
                                      l.get("msg", ""))["level"] == "info"


def test_running_as_root_draws_a_warning_and_sandbox_false_none(start_mtlsd, make_upstream, pki):
    """Review: Landlock does not govern connect() to a path socket, so a compromised mtlsd
    running as root could reach root-only sockets (systemd's, D-Bus, docker.sock) whose servers
    trust uid 0. mtlsd says so at start, with the sandbox's other lines."""
    upstream = make_upstream().address
    daemon = start_mtlsd(daemon_config([server_listener(pki, upstream)]))
    sandbox_line(daemon)
    warned = [l for l in daemon.logs() if l.get("msg", "").startswith(ROOT_WARNING)]
    if os.geteuid() == 0:
        assert len(warned) == 1, warned
        assert warned[0]["level"] == "warn"
        assert "run mtlsd as an unprivileged user" in warned[0]["msg"], warned[0]
    else:
        assert not warned, warned
    free = start_mtlsd(daemon_config([server_listener(pki, upstream)], sandbox=False))
    free.wait_for_log(lambda l: "sandbox is off" in l.get("msg", ""))
    assert not [l for l in free.logs() if l.get("msg", "").startswith(ROOT_WARNING)]
