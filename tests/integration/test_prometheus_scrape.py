"""mtlsd as Prometheus sees it: `promtool check metrics` accepts the exposition,
and a real Prometheus server (Debian `prometheus`) on loopback scrapes it and
answers queries about mtlsd_connections_total. Both tools are required: the
test fails (not skips) without them — `apt-get install prometheus`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from mtlsd_harness import client_context, free_port, reply_after, tls_exchange

PROMETHEUS_DEADLINE = 30.0     # from starting Prometheus to the series in its query API


def require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} not found: install Debian's `prometheus` package")
    return path


def drive_traffic(daemon, pki) -> None:
    """Two admitted connections (TLS 1.3 and 1.2) and one refused (no client cert)."""
    for version in ("1.3", "1.2"):
        ex = tls_exchange(daemon.addr(), client_context(pki, "client", max_version=version),
                          b"hi\n")
        assert ex.data == b"ok\n", ex.error
        daemon.wait_for_access(client=ex.local)
    ex = tls_exchange(daemon.addr(), client_context(pki, None))
    assert ex.data == b""
    daemon.wait_for_access(client=ex.local)


def test_promtool_check_metrics(serve, pki, tmp_path):
    promtool = require("promtool")
    daemon, _ = serve(reply_after(b"\n", b"ok\n"))
    drive_traffic(daemon, pki)
    saved = tmp_path / "metrics.txt"
    # Literally `curl /metrics | promtool check metrics`; pipefail so a failed
    # curl fails the pipeline, tee so we can check promtool saw a real scrape.
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         'curl -sS --fail "$0" | tee "$1" | "$2" check metrics',
         daemon.admin_url("/metrics"), str(saved), promtool],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"promtool: {proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
    text = saved.read_text()
    for family in ("mtlsd_connections_total", "mtlsd_handshake_failures_total",
                   "mtlsd_handshake_duration_seconds", "mtlsd_tls_handshakes_total",
                   "mtlsd_certificate_expiry_timestamp_seconds", "mtlsd_build_info"):
        assert f"# TYPE {family} " in text, family


def test_promtool_rejects_a_broken_exposition(tmp_path):
    """The check above can fail: promtool refuses a counter without _total."""
    promtool = require("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], capture_output=True, text=True,
                          input="# HELP foo x\n# TYPE foo counter\nfoo 1\n", timeout=30)
    assert proc.returncode != 0


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str):
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "mtlsd",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=workdir)

    def query(self, promql: str) -> list[dict]:
        """Instant query; [] until Prometheus is up and has the data."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                body = json.load(res)
        except OSError:
            return []
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_present(self, promql: str, timeout: float = 10.0) -> list[dict]:
        """An instant query for series that are there (they came with a scrape already seen):
        asked again while it answers [] (an answer slower than query()'s 2 s on a busy
        machine), until `timeout`; then the last answer, for the caller's assertion."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() >= deadline:
                return result
            time.sleep(0.25)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_real_prometheus_scrapes_mtlsd(serve, pki, tmp_path):
    binary = require("prometheus")
    daemon, _ = serve(reply_after(b"\n", b"ok\n"))
    drive_traffic(daemon, pki)

    prom = Prometheus(binary, tmp_path, daemon.admin_address)
    try:
        deadline = time.monotonic() + PROMETHEUS_DEADLINE
        series = []
        while time.monotonic() < deadline:
            assert prom.proc.poll() is None, f"prometheus exited:\n{prom.tail()}"
            series = prom.query("mtlsd_connections_total")
            if series:
                break
            time.sleep(0.25)
        assert series, f"no mtlsd_connections_total within {PROMETHEUS_DEADLINE}s:\n{prom.tail()}"

        by_result = {s["metric"]["result"]: float(s["value"][1]) for s in series}
        assert by_result == {"accepted": 2.0, "rejected": 1.0, "error": 0.0}, series
        for s in series:
            assert s["metric"]["job"] == "mtlsd"
            assert s["metric"]["instance"] == daemon.admin_address
            assert s["metric"]["listener"] == "inbound"
        up = prom.query_present('up{job="mtlsd"}')
        assert [float(s["value"][1]) for s in up] == [1.0], up
        refused = prom.query_present('mtlsd_handshake_failures_total{reason="no_client_cert"}')
        assert [float(s["value"][1]) for s in refused] == [1.0], refused
        # Histograms arrive as histograms: a quantile is computable.
        q = prom.query_present("histogram_quantile(0.5, mtlsd_handshake_duration_seconds_bucket)")
        assert len(q) == 1 and 0 < float(q[0]["value"][1]) < 10, q
    finally:
        prom.stop()
    assert prom.proc.returncode is not None
