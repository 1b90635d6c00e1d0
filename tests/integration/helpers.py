"""Small helpers several test modules share: polling, reloading, reading request lines, and the
like. One implementation each (they were copied from module to module, and drifted)."""

from __future__ import annotations

import signal
import ssl
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from mtlsd_harness import Mtlsd, Pki, run_cli, write_config

T = TypeVar("T")

SOFT_FAIL_WARNING = "admitted without a usable CRL (revocation.on_unavailable: allow)"


def wait_until(condition: Callable[[], T], timeout: float = 5.0,
               what: Union[str, Callable[[], str]] = "condition", interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout`
    seconds naming `what` (a callable is asked at the failure, e.g. for a log tail) and the last
    value. For what no signal announces: a log line has Mtlsd.wait_for_log."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what() if callable(what) else what} (last value {value!r})")
        time.sleep(interval)


def wait_request_line(daemon: Mtlsd, **match) -> dict:
    """The first "request" log line (HTTP mode: one per request) whose fields equal `match`."""
    return daemon.wait_for_log(lambda l: l.get("msg") == "request"
                               and all(l.get(k) == v for k, v in match.items()))


def reload_with(daemon: Mtlsd, config: Union[dict, str], *, wait: bool = True) -> Optional[dict]:
    """Rewrite the daemon's configuration file and send SIGHUP. With `wait`, until a "reloaded"
    line logged after the signal (returned); without, for a reload expected to fail, or whose
    outcome the caller reads itself."""
    mark = daemon.log_mark()
    write_config(daemon.config_path, config)
    daemon.send_signal(signal.SIGHUP)
    if not wait:
        return None
    return daemon.wait_for_log(lambda l: l.get("msg") == "reloaded", since=mark)


def upstream_seen(up) -> tuple[int, int]:
    """(connections, bytes) the upstream has had so far. Read once the access line of every
    earlier connection was, nothing of theirs is still on its way."""
    return up.connection_count(), up.total_received()


def soft_fail_warnings(daemon: Mtlsd, line: dict) -> list[dict]:
    """The "admitted without a usable CRL" warnings logged for the connection of access line
    `line` (they come before it: at the handshake)."""
    return [w for w in daemon.logs()
            if w.get("msg") == SOFT_FAIL_WARNING and w.get("conn_id") == line.get("conn_id")]


def der_of(pki: Pki, name: str) -> bytes:
    """The PEM certificate file `name` of `pki` (e.g. "client.crt"), as DER."""
    return ssl.PEM_cert_to_DER_cert(Path(pki.path(name)).read_text())


def stamp(t: float) -> str:
    """Unix time `t` as an openssl ca date (-startdate, -crl_lastupdate, ...): YYYYMMDDHHMMSSZ."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))


def verify_cli(mtlsd_bin: str, cfg, listener: str, cert: str, chain: Optional[str] = None):
    """`mtlsd verify --config cfg --listener L --cert CERT [--chain CHAIN]` (paths)."""
    args = ["verify", "--config", str(cfg), "--listener", listener, "--cert", cert]
    if chain:
        args += ["--chain", chain]
    return run_cli(mtlsd_bin, *args)


def read_head(conn) -> bytes:
    """An upstream handler's read of a request head: up to its empty line (or the close),
    through the raw socket (nothing kept in conn.received)."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.sock.recv(65536)
        if not data:
            break
        head += data
    return head
