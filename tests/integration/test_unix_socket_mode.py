"""listeners[].unix_socket_mode: the permission bits of a unix listener's socket (review: the
socket took what the umask left of 0777, so under the shipped unit, UMask=0077, only mtlsd's own
user could connect; nginx makes its unix sockets 0666, HAProxy has `mode`).

Connecting to a unix socket takes write permission on it, so each case is judged by a client of
another user (uid 65534, a child process that drops root) connecting through a client-mode
listener to a TLS echo server: it is echoed, or refused with EACCES. The daemon runs with umask
0077, as under the unit, and inside its sandbox: a reload binds sockets there too and must be
allowed to chmod them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import reload_with
from mtlsd_harness import daemon_config, deep_merge
from test_client_mode import client_listener
from tls_remote import Remote

NOBODY = 65534
ECHOED = "echoed"
REFUSED = "PermissionError"

# Connects to the unix socket argv[1], sends a line, prints ECHOED if it came back, else the
# error's type.
CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(type(e).__name__)
    sys.exit()
s.sendall(b"ping\\n")
s.shutdown(socket.SHUT_WR)
got = b""
while chunk := s.recv(100):
    got += chunk
print("{ECHOED}" if got == b"ping\\n" else repr(got))
"""


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def exchange_as_nobody(path: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(path)], preexec_fn=as_nobody,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def mode_of(path: Path) -> int:
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), path
    return stat.S_IMODE(st.st_mode)


def with_umask_0077() -> None:
    os.umask(0o077)


@pytest.fixture
def setup(pki, short_tmp):
    if os.geteuid() != 0:
        pytest.skip("needs root: the client connects as uid 65534")
    short_tmp.chmod(0o755)  # uid 65534 may reach the sockets; their own modes decide
    remote = Remote(pki.path("server.crt"), pki.path("server.key"))
    yield short_tmp, remote.address
    remote.close()


def listener(pki, remote: str, name: str, path: Path, mode: str | None = None) -> dict:
    extra = {"listen": f"unix:{path}"}
    if mode is not None:
        extra["unix_socket_mode"] = mode
    return client_listener(pki, remote, name=name, **extra)


def test_a_unix_listener_gets_its_mode_and_another_user_connects(start_mtlsd, pki, setup):
    where, remote = setup
    opened, default = where / "open.sock", where / "default.sock"
    config = daemon_config([listener(pki, remote, "open", opened, "0666"),
                            listener(pki, remote, "default", default)])
    start_mtlsd(config, preexec_fn=with_umask_0077)
    assert mode_of(opened) == 0o666
    assert exchange_as_nobody(opened) == ECHOED
    # Without the key, as before: what umask 0077 leaves.
    assert mode_of(default) == 0o700
    assert exchange_as_nobody(default) == REFUSED


def test_a_reload_adds_changes_and_drops_modes_inside_the_sandbox(start_mtlsd, pki, setup):
    where, remote = setup
    kept, added = where / "kept.sock", where / "added.sock"
    config = daemon_config([listener(pki, remote, "kept", kept, "0600")])
    assert config.get("sandbox", True) is not False
    daemon = start_mtlsd(config, preexec_fn=with_umask_0077)
    assert any(l.get("msg") == "sandbox on" for l in daemon.logs()), daemon.output_tail()
    assert mode_of(kept) == 0o600
    assert exchange_as_nobody(kept) == REFUSED

    # A listener added with a mode, and the kept one's mode changed: both bound anew.
    changed = deep_merge(config, {"listeners": [listener(pki, remote, "kept", kept, "0666"),
                                                listener(pki, remote, "added", added, "0660")]})
    reload_with(daemon, changed)
    assert mode_of(kept) == 0o666 and mode_of(added) == 0o660
    assert exchange_as_nobody(kept) == ECHOED
    assert exchange_as_nobody(added) == REFUSED  # no write permission for others
    os.chown(added, 0, NOBODY)  # the group the mode admits
    assert exchange_as_nobody(added) == ECHOED

    # The key dropped: what the umask leaves, as at a start.
    dropped = deep_merge(config, {"listeners": [listener(pki, remote, "kept", kept)]})
    reload_with(daemon, dropped)
    assert mode_of(kept) == 0o700
    assert exchange_as_nobody(kept) == REFUSED
    assert daemon.running()
