"""A reload while log.access_log_path cannot be written (review finding).

After logrotate's `create` made a file mtlsd may not write, or the log directory was removed,
every reload failed on "log.access_log_path: cannot write ...", though the running process keeps
writing to the file it has open and a new path waits for a restart anyway: certificate and CRL
rotation stopped until someone fixed the file. A reload now loads with a warning; `mtlsd check`
(and a start) still refuses the configuration.

Root ignores mode bits, so the path is made unwritable in ways that hold for root too: a
directory where the file was, or the log directory gone.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from helpers import wait_until
from mtlsd_harness import (client_context, daemon_config, echo_roundtrip, run_cli,
                           server_listener, write_config)

RELOADED = "reloaded"
FAILED = "reload failed; still serving the previous configuration"
TIMEOUT = 15.0  # a bound for failing on a busy machine, not a measurement


def _file_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]


def _wait_access(path: Path, client: str) -> dict:
    """The access line of the connection from `client`, once written to `path`."""
    def found():
        return next((l for l in _file_lines(path) if l.get("client") == client), None)
    return wait_until(found, TIMEOUT, f"the access line of {client} in {path}")


def _admitted(daemon, pki) -> str:
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.error is None and ex.data == b"ping\n", ex
    return ex.local


def _outcome(daemon, since: int) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") in (RELOADED, FAILED), TIMEOUT, since)


def _expect_reloaded(daemon, since: int, trigger: str) -> None:
    """A reload from `since` on succeeded, counted so, and warned about the log file."""
    line = _outcome(daemon, since)
    assert line["msg"] == RELOADED and line.get("trigger") == trigger, line
    warning = daemon.wait_for_log(
        lambda l: l.get("level") == "warn"
        and "log.access_log_path: cannot write" in l.get("msg", ""), TIMEOUT, since)
    assert "the running process keeps writing access lines where it writes them now" \
        in warning["msg"], warning
    m = daemon.scrape()
    assert m.total("mtlsd_config_reloads_total", result="success") >= 1
    assert m.total("mtlsd_config_reloads_total", result="failure") == 0
    assert m.get("mtlsd_config_last_reload_successful") == 1


def _replace_config(daemon, config: dict) -> None:
    """Written next to it and renamed over: a watcher never sees it half written."""
    path = Path(daemon.config_path)
    write_config(path.with_name("next.yaml"), config)
    os.replace(path.with_name("next.yaml"), path)


def _only_client2(pki, upstream, **top) -> dict:
    """A visible change: the allow list admits client2 only (the tests connect as client)."""
    allow = {"allow": {"common_names": ["client2"]}}
    return daemon_config([server_listener(pki, upstream.address, client_auth=allow)], **top)


def _check_refuses(mtlsd_bin: str, config: Path, needle: str) -> None:
    res = run_cli(mtlsd_bin, "check", "--config", str(config))
    assert res.returncode == 1, res
    assert "log.access_log_path: cannot write" in res.stderr and needle in res.stderr, res.stderr
    assert "warning:" not in next(l for l in res.stderr.splitlines() if "access_log_path" in l)
    # `check --reload` (the systemd unit's ExecReload) judges as the reload does: a warning, so
    # that `systemctl reload` goes ahead where the SIGHUP's reload would (review).
    res = run_cli(mtlsd_bin, "check", "--reload", "--config", str(config))
    assert res.returncode == 0, res
    line = next(l for l in res.stderr.splitlines() if "access_log_path" in l)
    assert "warning:" in line and needle in line, res.stderr


def _logging_daemon(start_mtlsd, make_upstream, pki, tmp_path, **top):
    """A daemon whose access lines go to tmp_path/logs/access.log, one line there already.
    Returns (daemon, upstream, the log file)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log_file = logs / "access.log"
    upstream = make_upstream()
    daemon = start_mtlsd(daemon_config([server_listener(pki, upstream.address)],
                                       log={"access_log_path": str(log_file)}, **top))
    _wait_access(log_file, _admitted(daemon, pki))
    return daemon, upstream, log_file


def _expect_refused_into(daemon, pki, log_file: Path) -> None:
    """A client the new allow list refuses: its access line lands in `log_file`, the file the
    process still has open."""
    ex = echo_roundtrip(daemon.addr(), client_context(pki, "client"))
    assert ex.data == b"", ex
    line = _wait_access(log_file, ex.local)
    assert line.get("reason") == "not_authorized", line


def test_sighup_reloads_when_a_directory_replaced_the_log_file(start_mtlsd, make_upstream, pki,
                                                               tmp_path, mtlsd_bin):
    # SIGHUP only: one reload, the test's.
    daemon, upstream, log_file = _logging_daemon(start_mtlsd, make_upstream, pki, tmp_path,
                                                 reload={"watch": False})
    logs = log_file.parent

    # Rotated, and the path taken by something mtlsd cannot open for writing, even as root.
    rotated = logs / "access.log.1"
    log_file.rename(rotated)
    log_file.mkdir()
    _replace_config(daemon, _only_client2(pki, upstream, log={"access_log_path": str(log_file)},
                                          reload={"watch": False}))
    mark = daemon.log_mark()
    daemon.send_signal(signal.SIGHUP)
    _expect_reloaded(daemon, mark, "SIGHUP")

    _expect_refused_into(daemon, pki, rotated)
    _check_refuses(mtlsd_bin, daemon.config_path, "it is a directory")


def test_file_change_reloads_when_the_log_directory_is_gone(start_mtlsd, make_upstream, pki,
                                                            tmp_path, mtlsd_bin):
    daemon, upstream, log_file = _logging_daemon(start_mtlsd, make_upstream, pki, tmp_path)
    logs = log_file.parent

    moved = tmp_path / "logs.old"
    logs.rename(moved)  # the directory is gone from where the configuration names it
    mark = daemon.log_mark()
    _replace_config(daemon, _only_client2(pki, upstream, log={"access_log_path": str(log_file)}))
    _expect_reloaded(daemon, mark, "file_change")

    _expect_refused_into(daemon, pki, moved / "access.log")
    _check_refuses(mtlsd_bin, daemon.config_path, "does not exist")
