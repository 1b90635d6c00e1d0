"""The sandbox starts where capset is refused: the shipped systemd unit (deploy/systemd/
mtlsd.service) runs mtlsd as an unprivileged user with no capability and an empty bounding set,
under `SystemCallFilter=~@privileged` with `SystemCallErrorNumber=EPERM`, which answers capset
with EPERM. mtlsd's sandbox called capset unconditionally and so could not start there
(`cannot start`, `capset: Operation not permitted`); with nothing held it must not call it.

Reproduced without systemd: the test (root) starts mtlsd as uid/gid 65534 with no capability and
an empty bounding set, under an outer seccomp filter (libseccomp through ctypes) that answers
capset with EPERM, as that unit's filter does.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mtlsd_harness import Mtlsd, client_context, daemon_config, echo_roundtrip, server_listener
from test_sandbox import started  # noqa: F401  (fixture)

NOBODY = 65534
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EPERM = 0x00050000 | errno.EPERM
PR_CAPBSET_DROP = 24


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


class CapsetRefused:
    """A preexec_fn: drops to uid/gid 65534 with no capability and an empty bounding set, then
    installs a seccomp filter that answers capset with EPERM.

    The library is loaded and the filter built in the parent (failures there fail the test with
    the reason); the child only switches identity and loads it. A failure in the child is written
    to its stderr (the daemon's log file) before Popen reports "Exception occurred in
    preexec_fn", so the test can say why."""

    def __init__(self) -> None:
        try:
            self.seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            pytest.fail(f"cannot load libseccomp.so.2 to build the capset filter: {e}")
        lib = self.seccomp
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                         ctypes.c_uint]
        lib.seccomp_rule_add.restype = ctypes.c_int
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_load.restype = ctypes.c_int
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                    ctypes.c_ulong, ctypes.c_ulong]
        self.libc.prctl.restype = ctypes.c_int
        self.last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())

        nr = lib.seccomp_syscall_resolve_name(b"capset")
        if nr < 0:
            pytest.fail(f"libseccomp cannot resolve capset (returned {nr})")
        self.ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        if not self.ctx:
            pytest.fail("seccomp_init(SCMP_ACT_ALLOW) failed")
        rc = lib.seccomp_rule_add(self.ctx, SCMP_ACT_ERRNO_EPERM, nr, 0)
        if rc != 0:
            self.release()
            pytest.fail(f"seccomp_rule_add(capset -> EPERM) failed: {os.strerror(-rc)}")

    def release(self) -> None:
        if self.ctx:
            self.seccomp.seccomp_release(self.ctx)
            self.ctx = None

    def __call__(self) -> None:  # in the child, before exec
        try:
            for cap in range(self.last_cap + 1):  # CapabilityBoundingSet= (needs CAP_SETPCAP)
                if self.libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)  # root without keepcaps: every capability set is cleared
            rc = self.seccomp.seccomp_load(self.ctx)
            if rc != 0:
                raise OSError(-rc, "seccomp_load (capset -> EPERM)")
        except BaseException as e:
            os.write(2, f"test preexec_fn failed: {e}\n".encode())
            raise


def test_starts_sandboxed_without_capabilities_where_capset_is_refused(
        mtlsd_bin, pki, make_upstream, short_tmp, started):
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemon is started as uid 65534 with no capabilities")
    ours = status(os.getpid())
    # Everything uid 65534 has to read: a 0755 directory of 0644 files, the key 0640 in its group
    # (the session's PKI and pytest's tmp_path are under 0700 directories).
    short_tmp.chmod(0o755)
    files = {}
    for name in ("server.crt", "server.key", "ca.crt"):
        files[name] = short_tmp / name
        shutil.copyfile(pki.path(name), files[name])
        files[name].chmod(0o644)
    os.chown(files["server.key"], 0, NOBODY)
    files["server.key"].chmod(0o640)
    listener = server_listener(pki, make_upstream().address,
                               tls={"cert": str(files["server.crt"]),
                                    "key": str(files["server.key"])},
                               client_auth={"ca": [str(files["ca.crt"])]})
    workdir = short_tmp / "run"
    workdir.mkdir(mode=0o755)
    workdir.chmod(0o755)
    refuse_capset = CapsetRefused()
    try:
        daemon = Mtlsd(mtlsd_bin, daemon_config([listener]), workdir, preexec_fn=refuse_capset)
        daemon.config_path.chmod(0o644)
        started.append(daemon)
        try:
            daemon.start(wait_ready=False)
        except subprocess.SubprocessError as e:
            pytest.fail(f"cannot start mtlsd as uid {NOBODY} under the capset filter ({e}):\n"
                        f"{daemon.stderr_text()}")
    finally:
        refuse_capset.release()

    first = daemon.wait_for_log(lambda l: l.get("msg") in ("ready", "cannot start"))
    if first["msg"] == "cannot start":
        pytest.fail(f"mtlsd did not start as uid {NOBODY} with no capability and capset refused "
                    f"(as under deploy/systemd/mtlsd.service): {first.get('error')}\n"
                    f"{daemon.output_tail()}")
    daemon.wait_ready()  # READY=1 too, and the listeners' addresses
    line = daemon.wait_for_log(lambda l: l.get("msg") == "sandbox on")
    assert line["capabilities"] == "none" and line["no_new_privs"] is True, line

    # What the kernel says: our identity, nothing held, and both filters (ours, then mtlsd's).
    st = status(daemon.pid)
    assert st["Uid"].split() == [str(NOBODY)] * 4 and st["Gid"].split() == [str(NOBODY)] * 4, st
    for caps in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
        assert int(st[caps], 16) == 0, (caps, st)
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    if "Seccomp_filters" in st:
        assert int(st["Seccomp_filters"]) == int(ours.get("Seccomp_filters", "0")) + 2, st

    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.error is None and ex.data == b"ping\n", f"not served: {ex!r}"

    assert daemon.stop() == 0, daemon.output_tail()
    refused = [l for l in daemon.logs() if l.get("msg") == "cannot start"]
    assert not refused, refused
