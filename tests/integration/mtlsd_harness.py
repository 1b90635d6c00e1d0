"""Drive the real mtlsd binary: write its YAML config, start it, read its JSON logs.

The contract between this harness and the daemon (tests use `log.format: json`):
every stderr line is one JSON object with at least "ts", "level", "msg";
  {"msg":"listening","listener":NAME,"address":"127.0.0.1:40123" | "[::1]:P" | "unix:/p"}
  {"msg":"admin listening","address":"127.0.0.1:P"}
  {"msg":"ready"}                        after every listener is bound (and READY=1 on
                                         NOTIFY_SOCKET: the harness waits for that signal)
  {"msg":"access","listener":..,"client":"127.0.0.1:5555","identity":..,
   "tls_version":..,"cipher":..,"rx_bytes":N,"tx_bytes":N,"duration_ms":N,
   "result":"accepted|rejected|error","reason":..,"detail":..}   one per connection
Tests bind port 0 and read the real ports back from these lines.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

# Re-exported so tests need a single import.
from clients import (Exchange, bulk_exchange, client_context, connect, curl, echo_roundtrip,
                     fmt_addr, half_close_exchange, open_tls, read_then_write_after_close,
                     read_to_end, s_client, strict_eof, tls_exchange)
from pki import Pki, generate_pki
from upstream import (Upstream, banner_then_read, digest_reply, duplex, echo, free_port,
                      http_ok, reply_after, reply_after_eof)

__all__ = [
    "Exchange", "bulk_exchange", "client_context", "connect", "curl", "echo_roundtrip",
    "fmt_addr", "half_close_exchange", "open_tls", "read_then_write_after_close", "read_to_end",
    "s_client", "strict_eof", "tls_exchange", "Pki", "generate_pki", "Upstream",
    "banner_then_read", "digest_reply", "duplex", "echo", "free_port", "http_ok", "reply_after",
    "reply_after_eof",
    "deep_merge", "server_listener", "daemon_config", "write_config", "parse_address",
    "Mtlsd", "MtlsdError", "run_cli", "proc_fd_count", "Metrics", "parse_metrics",
    "AdminResponse",
]

# Bounds for failing on things that certainly happen, not measurements: generous enough for a
# sanitized daemon on a busy two-core machine. A wait that expects nothing to come passes a
# short timeout of its own.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TIMEOUT = 20.0
POLL = 0.01
_notify_names = itertools.count()


# --- configuration ------------------------------------------------------------

def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; a None in `override` deletes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def server_listener(pki: Pki, upstream: str, name: str = "inbound", **overrides: Any) -> dict:
    """A server-mode listener on 127.0.0.1:0 requiring a client cert from ca.crt."""
    base = {
        "name": name,
        "mode": "server",
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "tls": {"cert": pki.path("server.crt"), "key": pki.path("server.key")},
        "client_auth": {"mode": "require", "ca": [pki.path("ca.crt")]},
    }
    return deep_merge(base, overrides)


def daemon_config(listeners: list[dict], **overrides: Any) -> dict:
    base = {
        "admin": {"address": "127.0.0.1:0"},
        "log": {"level": "info", "format": "json", "access_log": True},
        "workers": 2,
        "shutdown": {"drain_timeout": "5s"},
        "listeners": listeners,
    }
    return deep_merge(base, overrides)


def write_config(path: Path, config: dict | str) -> Path:
    path = Path(path)
    path.write_text(config if isinstance(config, str)
                    else yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path


def parse_address(address: str):
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80); 'unix:/p' -> '/p'."""
    if address.startswith("unix:"):
        return address[len("unix:"):]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# --- the daemon ---------------------------------------------------------------

class MtlsdError(AssertionError):
    pass


def check_sanitizer_reports(daemons: list["Mtlsd"]) -> None:
    """Fails (at teardown, after the daemons were stopped) when any daemon's stderr holds a
    sanitizer report: a TSan race or an ASan error fails the test that provoked it even when
    the daemon went on serving."""
    for daemon in daemons:
        report = daemon.sanitizer_report()
        if report:
            raise MtlsdError(f"sanitizer report from mtlsd {daemon.config_path}:\n{report}")


class Mtlsd:
    """One mtlsd process. Always call kill() (the fixtures do) in teardown."""

    def __init__(self, binary: str, config: dict | str, workdir: Path,
                 preexec_fn: Optional[Callable[[], None]] = None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(self.workdir / "mtlsd.yaml", config)
        self.stderr_path = self.workdir / "stderr.log"
        self.stdout_path = self.workdir / "stdout.log"
        self.preexec_fn = preexec_fn
        self.proc: Optional[subprocess.Popen] = None
        self.listeners: dict[str, str] = {}
        self.admin_address: Optional[str] = None
        self.notify_socket: Optional[socket.socket] = None  # bound by start()
        self.notifications: list[str] = []  # what the daemon sent there, in order
        self._notify_cv = threading.Condition()  # guards the two below and .notifications
        self._notes_returned = 0  # how many next_notification() handed out
        self._daemon_exited = False
        self.exit_seen = False  # the test caused or saw the process's exit (see exited_unseen)
        self._notify_reader: Optional[threading.Thread] = None
        log_options = config.get("log", {}) if isinstance(config, dict) else {}
        self._json_log = not isinstance(config, dict) or log_options.get("format") == "json"
        # The log read so far: parsed complete lines, the bytes read, an unfinished last line.
        self._log_lines: list[dict] = []
        self._log_offset = 0
        self._log_partial = b""

    # --- lifecycle --------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> "Mtlsd":
        self.notify_socket = _bind_notify_socket()
        notify_address = "@" + self.notify_socket.getsockname()[1:].decode()
        user_preexec = self.preexec_fn

        def child_setup():  # in the child, before exec: a test's own preexec_fn runs after ours
            os.environ["NOTIFY_SOCKET"] = notify_address
            if user_preexec:
                user_preexec()
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                preexec_fn=child_setup, cwd=self.workdir)
        self._notify_reader = threading.Thread(target=self._read_notifications, daemon=True)
        self._notify_reader.start()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the daemon says READY=1 on its NOTIFY_SOCKET (as systemd's Type=notify waits),
        then until its "ready" log line is written too: the lines before it (listeners, warnings)
        are in the log when this returns. A daemon this harness did not start (no socket) is
        waited for by its "ready" line alone."""
        deadline = time.monotonic() + timeout
        if self.notify_socket is not None:
            self._wait_notified("READY=1", deadline)
        if self._json_log:
            self._wait_log(lambda line: line.get("msg") == "ready", deadline, 0,
                           "mtlsd not ready (no \"ready\" log line)")
        self._collect_addresses(self.logs())

    def next_notification(self, timeout: float) -> Optional[str]:
        """The next message the daemon sent on NOTIFY_SOCKET after those this call already
        returned (all are kept in .notifications), or None when none comes within `timeout`."""
        with self._notify_cv:
            self._notify_cv.wait_for(lambda: len(self.notifications) > self._notes_returned,
                                     timeout)
            if len(self.notifications) <= self._notes_returned:
                return None
            self._notes_returned += 1
            return self.notifications[self._notes_returned - 1]

    def _read_notifications(self) -> None:
        """A thread per daemon: reads every datagram at once (an unread socket queue fills after
        a few messages, and sd_notify then blocks the daemon's thread that sends: a reload, a
        watchdog ping) and wakes waiters; ends when the process exits (pidfd)."""
        try:
            exited = os.pidfd_open(self.proc.pid)
        except ProcessLookupError:  # already exited and reaped (a test's wait_exit())
            with self._notify_cv:
                self._daemon_exited = True
                self._notify_cv.notify_all()
            return
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.notify_socket, selectors.EVENT_READ)
                sel.register(exited, selectors.EVENT_READ)
                done = False
                while not done:
                    for key, _ in sel.select():
                        if key.fileobj == exited:
                            done = True
                    self.notify_socket.setblocking(False)
                    while True:
                        try:
                            message = self.notify_socket.recv(4096).decode(errors="replace")
                        except BlockingIOError:
                            break
                        with self._notify_cv:
                            self.notifications.append(message)
                            self._notify_cv.notify_all()
        finally:
            os.close(exited)
            with self._notify_cv:
                self._daemon_exited = True
                self._notify_cv.notify_all()

    def _wait_notified(self, assignment: str, deadline: float) -> None:
        """Until `assignment` (READY=1) arrives or the daemon exits (reported at once, with its
        log tail); no polling."""
        def arrived() -> bool:
            return any(assignment in m.split("\n") for m in self.notifications)
        with self._notify_cv:
            self._notify_cv.wait_for(lambda: arrived() or self._daemon_exited,
                                     max(0.0, deadline - time.monotonic()))
            if arrived():
                return
            exited = self._daemon_exited
        if exited:
            self.proc.wait(5)
            self.exit_seen = True
            raise MtlsdError(f"mtlsd exited with {self.proc.returncode} before "
                             f"{assignment}:\n{self.output_tail()}")
        raise MtlsdError(f"mtlsd sent no {assignment} within the timeout:\n{self.output_tail()}")

    def _collect_addresses(self, lines: list[dict]) -> None:
        for line in lines:
            if line.get("msg") == "listening":
                self.listeners[line["listener"]] = line["address"]
            elif line.get("msg") == "admin listening":
                self.admin_address = line["address"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        alive = self.proc is not None and self.proc.poll() is None
        self.exit_seen |= self.proc is not None and not alive
        return alive

    def exited_unseen(self) -> bool:
        """Whether the process exited by itself while the test neither caused that exit (a
        terminating signal, stop) nor looked at it (running() false, wait_exit, a wait that
        failed on the exit): the start_mtlsd fixture fails such a test at teardown."""
        return self.proc is not None and self.proc.poll() is not None and not self.exit_seen

    def send_signal(self, sig: int) -> None:
        self.exit_seen |= sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL,
                                  signal.SIGABRT)
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        self.exit_seen = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise MtlsdError(f"mtlsd still running after {timeout}s:\n{self.output_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.exit_seen = True
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(5)
        if self._notify_reader is not None:
            self._notify_reader.join(5)
        if self.notify_socket is not None:
            self.notify_socket.close()

    # --- addresses --------------------------------------------------------------

    def admin_url(self, path: str = "/metrics") -> str:
        if not self.admin_address:
            raise MtlsdError("no 'admin listening' line: is admin.address set?")
        return f"http://{self.admin_address}{path}"

    def admin_request(self, path: str, method: str = "GET", body: Optional[bytes] = None,
                      timeout: float = 5.0) -> "AdminResponse":
        """One plain-HTTP request to the admin listener (a fresh connection each time)."""
        if not self.admin_address:
            raise MtlsdError("no 'admin listening' line: is admin.address set?")
        host, port = parse_address(self.admin_address)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body)
            res = conn.getresponse()
            return AdminResponse(res.status, {k.lower(): v for k, v in res.getheaders()},
                                 res.read())
        finally:
            conn.close()

    def scrape(self) -> "Metrics":
        """GET /metrics, parsed; fails unless the answer is 200 in text format 0.0.4."""
        res = self.admin_request("/metrics")
        if res.status != 200:
            raise MtlsdError(f"/metrics answered {res.status}: {res.body[:200]!r}")
        return parse_metrics(res.body.decode())

    def addr(self, listener: str = "inbound"):
        """(host, port) to connect to, or a unix socket path."""
        if listener not in self.listeners:
            raise MtlsdError(f"no 'listening' line for listener {listener!r}; "
                             f"have {sorted(self.listeners)}")
        return parse_address(self.listeners[listener])

    # --- logs ---------------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # What ASan, LSan, UBSan and TSan print when they find something (sanitizer builds).
    SANITIZER_MARKERS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer",
                         "ERROR: LeakSanitizer", "runtime error:", "ThreadSanitizer: reported")

    def sanitizer_report(self, n: int = 60) -> str:
        """The first sanitizer report in the daemon's stderr (n lines from it), or ""."""
        lines = self.stderr_text().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in self.SANITIZER_MARKERS):
                return "\n".join(lines[i:i + n])
        return ""

    def output_tail(self, n: int = 40) -> str:
        lines = self.stderr_text().splitlines()[-n:]
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        return "\n".join(lines) + (f"\n[stdout]\n{out}" if out else "")

    def logs(self) -> list[dict]:
        """Every complete stderr line, parsed. A line that is not a JSON object
        comes back as {"_raw": line} so tests can assert there are none."""
        self._read_new_lines()
        return list(self._log_lines)

    def _read_new_lines(self) -> None:
        """Parses what was appended to stderr since the last call (from the offset reached):
        waiting on a log costs the new bytes, not the whole file again."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._log_offset += len(data)
        complete, _, self._log_partial = (self._log_partial + data).rpartition(b"\n")
        for raw_bytes in complete.split(b"\n") if complete else []:
            raw = raw_bytes.decode(errors="replace")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            self._log_lines.append(obj if isinstance(obj, dict) else {"_raw": raw})

    def access_logs(self, **match: Any) -> list[dict]:
        return [line for line in self.logs()
                if line.get("msg") == "access" and _matches(line, match)]

    def log_mark(self) -> int:
        """How many log lines exist now; pass as since= to ignore everything older (a shared
        daemon may already hold a line from an earlier connection that used the same client
        port)."""
        self._read_new_lines()
        return len(self._log_lines)

    def _wait_log(self, take: Callable[[int, dict], bool] | Callable[[dict], bool],
                  deadline: float, since: int, what: str, with_index: bool = False) -> dict:
        """The first line from index `since` on that `take` accepts, reading only new lines
        between checks; fails with the log tail when the deadline passes or the daemon exits
        (a line written before the exit still counts)."""
        checked = since
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            self._read_new_lines()
            for index in range(checked, len(self._log_lines)):
                line = self._log_lines[index]
                if take(index, line) if with_index else take(line):
                    return line
            checked = len(self._log_lines)
            if exited:
                self.exit_seen = True
                raise MtlsdError(f"{what}: mtlsd exited with {self.proc.returncode}:\n"
                                 f"{self.output_tail()}")
            if time.monotonic() >= deadline:
                raise MtlsdError(f"{what} within the timeout:\n{self.output_tail()}")
            time.sleep(POLL)

    def wait_for_log(self, predicate: Callable[[dict], bool],
                     timeout: float = LOG_TIMEOUT, since: int = 0) -> dict:
        return self._wait_log(predicate, time.monotonic() + timeout, since,
                              f"no matching log line ({timeout}s)")

    def wait_for_access(self, timeout: float = LOG_TIMEOUT, since: int = 0, **match: Any) -> dict:
        """The access line for one connection, e.g. wait_for_access(client=ex.local).

        A line is handed out once: on a shared daemon an earlier connection may have used the
        same ephemeral client port, and its (already consumed) line must not answer for a new
        connection. `since` excludes older lines altogether."""
        consumed = self.__dict__.setdefault("_consumed_access", set())

        def take(index: int, line: dict) -> bool:
            if index in consumed or line.get("msg") != "access" or not _matches(line, match):
                return False
            consumed.add(index)
            return True
        return self._wait_log(take, time.monotonic() + timeout, since,
                              f"no matching access line ({timeout}s)", with_index=True)


def _bind_notify_socket() -> socket.socket:
    """A datagram socket in the abstract namespace (no file, no sun_path length to mind) for the
    daemon's sd_notify messages; the name is unique across processes and runs."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0mtlsd-test-{os.getpid()}-{next(_notify_names)}-{secrets.token_hex(4)}")
    return sock


def _matches(line: dict, match: dict) -> bool:
    return all(line.get(k) == v for k, v in match.items())


# --- admin endpoint and Prometheus text format -------------------------------

class AdminResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def __repr__(self) -> str:
        return f"AdminResponse({self.status}, {self.body[:120]!r})"


SeriesKey = tuple  # (metric name, ((label, value), ...) sorted)


class Metrics:
    """One scrape: every sample keyed by (name, sorted label pairs), plus # TYPE/# HELP."""

    def __init__(self) -> None:
        self.samples: dict[SeriesKey, float] = {}
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.lines: list[str] = []      # the sample lines, verbatim

    @staticmethod
    def key(name: str, labels: dict[str, str]) -> SeriesKey:
        return name, tuple(sorted(labels.items()))

    def get(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; KeyError when absent."""
        key = self.key(name, labels)
        if key not in self.samples:
            have = [dict(l) for (n, l) in self.samples if n == name]
            raise KeyError(f"no sample {name}{labels}; have {have}")
        return self.samples[key]

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of `name` whose labels include `match`."""
        return [(dict(labels), v) for (n, labels), v in self.samples.items()
                if n == name and all(dict(labels).get(k) == val for k, val in match.items())]

    def total(self, name: str, **match: str) -> float:
        return sum(v for _, v in self.series(name, **match))

    def label_values(self) -> set[str]:
        return {value for (_, labels) in self.samples for _, value in labels}

    def delta(self, before: "Metrics", names: Optional[set[str]] = None) -> dict[SeriesKey, float]:
        """self - before for every series (absent = 0) of the given names, zeros dropped."""
        out = {}
        for key in set(self.samples) | set(before.samples):
            if names is not None and key[0] not in names:
                continue
            d = self.samples.get(key, 0.0) - before.samples.get(key, 0.0)
            if d != 0:
                out[key] = d
        return out


def _parse_labels(text: str, i: int) -> tuple[dict[str, str], int]:
    """Parse `{a="x",b="y"}` starting at text[i] == '{'; returns (labels, index after '}')."""
    labels: dict[str, str] = {}
    i += 1
    while True:
        while text[i] in " ,":
            i += 1
        if text[i] == "}":
            return labels, i + 1
        eq = text.index("=", i)
        name = text[i:eq].strip()
        if text[eq + 1] != '"':
            raise ValueError(f"label {name}: value not quoted: {text!r}")
        j, value = eq + 2, []
        while text[j] != '"':
            if text[j] == "\\":
                nxt = text[j + 1]
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                j += 2
            else:
                value.append(text[j])
                j += 1
        if name in labels:
            raise ValueError(f"duplicate label {name}: {text!r}")
        labels[name] = "".join(value)
        i = j + 1


def parse_metrics(text: str) -> Metrics:
    """Prometheus text exposition format 0.0.4 (what promtool and Prometheus read).
    Strict: a malformed line or a duplicate series raises ValueError."""
    m = Metrics()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                m.types[parts[2]] = parts[3] if len(parts) > 3 else ""
            elif len(parts) >= 3 and parts[1] == "HELP":
                m.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace)
            rest = line[end:].split()
        else:
            name, labels, rest = line[:space], {}, line[space:].split()
        if not rest or len(rest) > 2:
            raise ValueError(f"bad sample line: {raw!r}")
        value = float(rest[0])  # accepts NaN, +Inf, -Inf
        key = Metrics.key(name, labels)
        if key in m.samples:
            raise ValueError(f"duplicate series: {raw!r}")
        m.samples[key] = value
        m.lines.append(raw)
    return m


# --- command-line modes -------------------------------------------------------

def run_cli(binary: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run `mtlsd ARGS` (check, verify, version); output as text."""
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def proc_fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
