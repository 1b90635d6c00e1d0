"""bench/report.py with bench/report_rows.py: the rows that subtract one workload's CPU per
request from another's (what handling HTTP, and adding the three headers, costs a server), and
no ratio of two such differences when noise makes one of them negative. Then what a review of
the bench found: workers 2 / 1 against one unpinned worker of the same round (n/a when it was
not near saturation, invalid above 2); the access log's cost judged in HTTP mode (a line per
request), the layer-4 keep-alive row (a line per connection) without a verdict; no PASS for a
result without evidence (a reload not seen, idle connections the server closed); the Targets
list's sub-rows named after their own group; RESULTS.md naming the measured copies' SHA-256."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "report.py"

HANDLING = "CPU µs per request that handling HTTP costs"
HEADERS = "CPU µs per request that adding the three headers costs"


def line(workload: str, label: str, per_cpu_s: float) -> str:
    return json.dumps({"workload": workload, "mode": "requests", "label": label, "round": 1,
                       "ops_per_server_cpu_s": per_cpu_s})


def report(lines: list[str]) -> dict[str, list[str]]:
    """The printed table's rows, by the start of their (stripped) metric name."""
    with tempfile.TemporaryDirectory() as d:
        results = Path(d) / "results.jsonl"
        results.write_text("\n".join(lines) + "\n")
        out = subprocess.run([sys.executable, str(SCRIPT), str(results)], capture_output=True,
                             text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    rows = {}
    for text in out.stdout.splitlines():
        for name in (HANDLING, HEADERS):
            if text.strip().startswith(name):
                rows[name] = text.split()
    return rows


class ReportRowsTest(unittest.TestCase):
    def test_http_handling_is_http_mode_minus_layer4_per_request(self):
        rows = report([
            line("requests", "mtlsd", 50000),    # 20 µs per request
            line("http_bare", "mtlsd", 40000),   # 25 µs: HTTP costs 5
            line("http", "mtlsd", 32000),        # 31.25 µs: the headers 6.25
            line("requests", "nginx", 50000),
            line("http_bare", "nginx", 25000),   # 40 µs: HTTP costs 20
            line("http", "nginx", 20000),        # 50 µs: the headers 10
        ])
        handling, headers = rows[HANDLING], rows[HEADERS]
        # ... | better | mtlsd | nginx | mtlsd/nginx | target | verdict
        self.assertEqual(handling[-3:], ["5.00", "20.00", "0.25"])
        self.assertEqual(headers[-2:], ["6.25", "10.00"])  # an "info" row: no ratio

    def test_no_ratio_of_a_difference_below_zero(self):
        rows = report([
            line("requests", "mtlsd", 40000),
            line("http_bare", "mtlsd", 50000),   # faster than layer-4: -5 µs, noise
            line("requests", "nginx", 50000),
            line("http_bare", "nginx", 25000),
        ])
        self.assertEqual(rows[HANDLING][-3:], ["lower", "-5.00", "20.00"])


def result(workload: str, mode: str, label: str = "mtlsd", rnd: int = 1, **fields) -> str:
    return json.dumps({"workload": workload, "mode": mode, "label": label, "round": rnd,
                       **fields})


def markdown(lines: list[str], machine: dict | None = None) -> tuple[dict[str, list[str]], str]:
    """report.py --markdown: its table's rows by (stripped) metric name, and the whole text."""
    with tempfile.TemporaryDirectory() as d:
        results, md = Path(d) / "results.jsonl", Path(d) / "RESULTS.md"
        results.write_text("\n".join(lines) + "\n")
        args = [sys.executable, str(SCRIPT), str(results), "--markdown", str(md)]
        if machine is not None:
            (Path(d) / "machine.json").write_text(json.dumps(machine))
            args += ["--machine", str(Path(d) / "machine.json")]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(out.stderr)
        text = md.read_text()
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| metric"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].removeprefix("· ")] = cells
    return rows, text


def row_starting(rows: dict[str, list[str]], start: str) -> list[str]:
    found = [cells for name, cells in rows.items() if name.startswith(start)]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} rows start with {start!r}: {list(rows)}")
    return found[0]


def workers_windows(label: str, one: float, two: float, one_busy: float) -> list[str]:
    """workers2's four windows (1, 2, 2, 1 workers) of requests, 1 s each: `one` and `two`
    requests per window, the one worker's cores `one_busy` busy."""
    return [result(f"workers2_w{n}_{i}", "requests", label, ops=one if n == 1 else two,
                   window_s=1.0, server_cpu_s=one_busy if n == 1 else 1.0)
            for n, i in ((1, 1), (2, 1), (2, 2), (1, 2))]


def access_log_windows(workload: str, mode: str, off: float, on: float) -> list[str]:
    """The four windows (off, on, on, off) of an access-log workload: `off` and `on` operations
    per server CPU-second."""
    return [result(f"{workload}_{state}_{n}", mode, ops=off if state == "off" else on,
                   server_cpu_s=1.0)
            for state in ("off", "on") for n in (1, 2)]


class ReviewFindingsTest(unittest.TestCase):
    WORKERS = "workers 2 / 1: requests/s"

    def test_workers_row_divides_by_one_unpinned_worker_of_the_same_round(self):
        rows, _ = markdown([
            # the pinned one-worker row of the round: not the baseline any more
            result("requests", "requests", ops_per_s=500.0, ops_per_server_cpu_s=1000.0),
            *workers_windows("mtlsd", one=1000, two=1900, one_busy=0.95),
        ])
        row = row_starting(rows, self.WORKERS)
        self.assertEqual(row[2], "1.90")
        self.assertEqual(row[-1], "PASS")

    def test_workers_row_reads_na_when_the_one_worker_was_not_near_saturation(self):
        rows, _ = markdown(workers_windows("mtlsd", one=1000, two=1900, one_busy=0.7))
        verdict = row_starting(rows, self.WORKERS)[-1]
        self.assertTrue(verdict.startswith("n/a: one worker not near saturation"), verdict)
        self.assertIn("0.70", verdict)

    def test_workers_ratio_above_two_is_invalid(self):
        rows, _ = markdown([*workers_windows("mtlsd", one=1000, two=1900, one_busy=0.95),
                            *workers_windows("nginx", one=1000, two=2300, one_busy=0.95)])
        verdict = row_starting(rows, self.WORKERS)[-1]
        self.assertTrue(verdict.startswith("invalid: above 2"), verdict)
        self.assertIn("nginx 2.30", verdict)

    def test_access_log_judged_in_http_mode_layer4_requests_only_information(self):
        rows, _ = markdown([
            *access_log_windows("access_log", "handshakes", off=1000, on=990),      # 1%
            *access_log_windows("access_log", "requests", off=20000, on=18000),     # 10%
            *access_log_windows("access_log_http", "requests", off=20000, on=18800),  # 6%
        ])
        layer4 = row_starting(rows, "access_log: true costs, layer 4: handshakes")
        self.assertEqual((layer4[2], layer4[-1]), ("1.0", "PASS"))
        keepalive = row_starting(rows, "keep-alive requests per CPU-s %")
        self.assertEqual((keepalive[2], keepalive[-2], keepalive[-1]), ("10.0", "", ""))
        http = row_starting(rows, "access_log: true costs, HTTP mode")
        self.assertEqual((http[2], http[-2], http[-1]), ("6.0", "<= 5%", "FAIL"))

    def test_a_reload_without_evidence_is_an_error_not_a_pass(self):
        fields = {"resumed_pct_after_signal": 100.0, "old_ticket_resumed_pct": 100.0}
        rows, text = markdown([
            result("reload", "resumed", invalid="no successful reload logged", **fields),
            result("reload", "resumed", "nginx", **fields),
        ])
        verdict = row_starting(rows, "reload, workers 2: resumed %")[-1]
        self.assertEqual(verdict, "ERROR: no successful reload logged")
        self.assertEqual(row_starting(rows, "reload, workers 2: resumed %")[2], "-")
        self.assertIn("reload/resumed/mtlsd/1: not used: no successful reload logged", text)
        self.assertNotIn("**PASS** reload", text)

    def test_idle_connections_the_server_closed_make_the_row_an_error(self):
        rows, _ = markdown([result("idle", "idle", requested=500, connections=480, closed=20,
                                   pss_kib_per_conn=10.0)])
        verdict = row_starting(rows, "idle mTLS connection, PSS KiB (500)")[-1]
        self.assertEqual(verdict, "ERROR: 20 of 500 connections closed before the sample")

    def test_targets_list_names_a_sub_row_after_its_own_group(self):
        _, text = markdown([
            result("latency", "latency", offered_rate=5000, ops_per_s=5000, lat_p50_ms=1.0,
                   lat_p99_ms=2.0),
            result("latency", "latency", "nginx", offered_rate=5000, ops_per_s=5000,
                   lat_p50_ms=1.0, lat_p99_ms=2.0),
        ])
        self.assertIn("** requests at a fixed 5000/s: p99 ms — target", text)
        self.assertNotIn("p50 ms: p99 ms", text)

    def test_results_md_names_the_sha256_of_the_measured_copies(self):
        _, text = markdown([result("requests", "requests", ops_per_server_cpu_s=1000.0)],
                           machine={"commit": "0dcfb70", "mtlsd_sha256": "0123456789ab",
                                    "loadgen_sha256": "ba9876543210",
                                    "idle_floor_sha256": "00112233aabb"})
        self.assertIn("commit 0dcfb70", text)
        self.assertIn("sha256 0123456789ab", text)
        self.assertIn("mtlsd_loadgen ba9876543210", text)


if __name__ == "__main__":
    unittest.main()
