"""Fixtures for the mtlsd integration suite.

Run:  MTLSD_BIN=/path/to/mtlsd /usr/bin/python3 -m pytest tests/integration
MTLSD_BIN is required for every daemon test (they fail, not skip, without it);
test_pki.py needs only the openssl CLI. MTLSD_TEST_PKI (set by ctest) names a shared,
read-only PKI made by shared_pki.py; without it the session generates one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from mtlsd_harness import (Mtlsd, Pki, Upstream, check_sanitizer_reports, daemon_config, echo,
                           generate_pki, server_listener)

# Every test gets a hard wall-clock limit so a hung socket can never hang CI.
TEST_TIMEOUT = int(os.environ.get("MTLSD_TEST_TIMEOUT", "90"))


class WallClockTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def on_alarm(signum, frame):
        raise WallClockTimeout(f"{item.nodeid} exceeded {TEST_TIMEOUT}s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so fixtures can dump daemon logs on failure.
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def mtlsd_bin() -> str:
    path = os.environ.get("MTLSD_BIN")
    if not path:
        pytest.fail("MTLSD_BIN is not set: point it at the mtlsd binary under test")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"MTLSD_BIN={path} is not an executable file")
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """One PKI for the whole session; tests that mutate it use pki.copy_to().

    Under ctest it is the one made once per run by the integration.pki_setup fixture
    (MTLSD_TEST_PKI: read-only, shared by every file); run by hand, this session makes its own."""
    shared = os.environ.get("MTLSD_TEST_PKI")
    if shared:
        if not (Path(shared) / "ca.crt").is_file():
            pytest.fail(f"MTLSD_TEST_PKI={shared} holds no PKI (run the integration.pki_setup test)")
        return Pki(Path(shared))
    return generate_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture
def make_upstream():
    """Factory: make_upstream(handler=echo, port=0, unix_path=None) -> Upstream."""
    made: list[Upstream] = []

    def make(handler=echo, **kwargs) -> Upstream:
        up = Upstream(handler, **kwargs)
        made.append(up)
        return up
    yield make
    for up in made:
        up.close()


@pytest.fixture
def start_mtlsd(mtlsd_bin, tmp_path, request):
    """Factory: start_mtlsd(config_dict, wait_ready=True, preexec_fn=None) -> Mtlsd.

    Every daemon started here is killed at teardown; on failure its log tail
    is printed (pytest shows it with the failure). A daemon that exited by itself unseen by a
    passing test (Mtlsd.exited_unseen) fails it.
    """
    started: list[Mtlsd] = []

    def start(config, *, wait_ready: bool = True, preexec_fn=None) -> Mtlsd:
        daemon = Mtlsd(mtlsd_bin, config, tmp_path / f"mtlsd{len(started)}",
                       preexec_fn=preexec_fn)
        started.append(daemon)
        return daemon.start(wait_ready)
    yield start
    unseen = [d for d in started if d.exited_unseen()]
    for daemon in started:
        if _failed(request):
            print(f"--- mtlsd {daemon.config_path} (exit {daemon.proc and daemon.proc.poll()})")
            print(daemon.output_tail(60))
        daemon.kill()
    check_sanitizer_reports(started)
    if unseen and not _failed(request):
        # A daemon that died under a passing test: whatever the test checked after, it was
        # not checked against a running daemon. A test that expects the exit says so
        # (wait_exit, running(), stop).
        pytest.fail("".join(f"mtlsd {d.config_path} exited by itself with {d.proc.returncode}:\n"
                            f"{d.output_tail(30)}\n" for d in unseen))


@pytest.fixture
def serve(start_mtlsd, make_upstream, pki):
    """serve(handler=echo, top={...}, upstream=None, **listener_overrides) -> (Mtlsd, Upstream).

    One server-mode listener "inbound" in front of a fresh upstream.
    """
    def serve(handler=echo, *, top: dict | None = None,
              upstream: Upstream | str | None = None, **overrides):
        # `upstream` may be an address string where nothing listens (yet).
        up = upstream if upstream is not None else make_upstream(handler)
        address = up if isinstance(up, str) else up.address
        listener = server_listener(pki, address, **overrides)
        daemon = start_mtlsd(daemon_config([listener], **(top or {})))
        return daemon, up
    return serve


@pytest.fixture
def refused_address():
    """An address ("127.0.0.1:PORT") whose connections are refused: bound, never listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def short_tmp(tmp_path_factory) -> Path:
    """A short directory for unix sockets (sun_path is limited to 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="mtlsd-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
