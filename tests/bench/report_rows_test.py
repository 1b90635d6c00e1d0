"""bench/report.py with bench/report_rows.py: the rows that subtract one workload's CPU per
request from another's (what handling HTTP, and adding the three headers, costs a server), and
no ratio of two such differences when noise makes one of them negative."""

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


if __name__ == "__main__":
    unittest.main()
