"""`mtlsd run` crashes on an exception that escapes its control loop (review of 9539e91).

The catch-all that gives `check` and `verify` an exit status instead of std::terminate must not
cover a running daemon: exit 1 means "a start that failed", which the systemd unit does not
restart (RestartPreventExitStatus=1 2), so a daemon that had served for hours would stay down.
An escaped exception is a crash (SIGABRT), which Restart=on-failure restarts.

The exception is injected where a running daemon calls out on its own schedule: an
LD_PRELOADed sd_notify (built here) throws std::bad_alloc at the second WATCHDOG=1 ping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from mtlsd_harness import daemon_config, server_listener, write_config

SANITIZED = os.environ.get("MTLSD_SANITIZED") == "1"
TIMEOUT = 30.0  # a bound for failing on a busy machine, not a measurement

INJECT = r"""
#include <dlfcn.h>
#include <cstring>
#include <new>
// The second WATCHDOG=1 ping throws: an internal error in a running daemon's control loop.
extern "C" int sd_notify(int unset, const char* state) {
  static int pings = 0;
  if (std::strstr(state, "WATCHDOG=1") && ++pings == 2) throw std::bad_alloc();
  using fn = int (*)(int, const char*);
  static fn real = reinterpret_cast<fn>(dlsym(RTLD_NEXT, "sd_notify"));
  return real(unset, state);
}
"""


@pytest.mark.skipif(SANITIZED, reason="a sanitizer runtime must be the first library loaded")
def test_an_exception_escaping_the_running_daemon_is_a_crash_not_exit_1(mtlsd_bin, pki, tmp_path):
    source = tmp_path / "inject.cpp"
    source.write_text(INJECT)
    inject = tmp_path / "inject.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", "-o", str(inject), str(source), "-ldl"],
                   check=True, timeout=120)
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(TIMEOUT)
    config = write_config(tmp_path / "mtlsd.yaml",
                          daemon_config([server_listener(pki, "127.0.0.1:9")]))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000",
               LD_PRELOAD=str(inject))
    proc = subprocess.Popen([mtlsd_bin, "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = False
        while not ready:  # READY=1 first: the exception comes to a daemon that is running
            ready = b"READY=1" in notify.recv(4096)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, err[-2000:])
    assert "std::bad_alloc" in err, err[-2000:]
    assert "mtlsd: internal error" not in err, err[-2000:]
