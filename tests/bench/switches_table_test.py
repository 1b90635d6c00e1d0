"""bench/switches_table.py: context switches and CPU (task-clock, in ms) per operation, and a
stat without either count is an error rather than a row of zeros."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "switches_table.py"

# `perf stat -x,` lines: count, unit, event, ...
STAT = """# started on Fri Dec  4 2026
30,,context-switches,2000000,100.00,15.000,K/sec
2.50,msec,task-clock,2000000,100.00,0.500,CPUs utilized
"""


def table(stat_text: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as d:
        stat, ops = Path(d) / "perf.stat", Path(d) / "ops.json"
        stat.write_text(stat_text)
        ops.write_text(json.dumps({"ops": 60}) + "\n" + json.dumps({"ops": 40}) + "\n")
        return subprocess.run([sys.executable, str(SCRIPT), "mtlsd", str(stat), str(ops)],
                              capture_output=True, text=True, timeout=30)


class SwitchesTableTest(unittest.TestCase):
    def test_counts_per_operation(self):
        out = table(STAT)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
                for line in out.stdout.splitlines() if line.startswith("| ")}
        self.assertEqual(rows["operations counted"], "100")
        self.assertEqual(rows["context switches per operation"], "0.300")
        self.assertEqual(rows["CPU µs per operation (task-clock)"], "25.0")  # 2.5 ms / 100
        self.assertEqual(rows["operations per context switch"], "3.3")

    def test_a_stat_without_the_counts_is_an_error(self):
        for text in ("# started on Fri Dec  4 2026\n",
                     "30,,context-switches,1,100.00,,\n<not counted>,msec,task-clock,0,0.00,,\n"):
            out = table(text)
            self.assertNotEqual(out.returncode, 0, text)
            self.assertIn("no context-switches or task-clock count", out.stderr)


if __name__ == "__main__":
    unittest.main()
