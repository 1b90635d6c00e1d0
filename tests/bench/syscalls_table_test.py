"""bench/syscalls_table.py: the context switches get a row of their own and stay out of the
"all" sum of system calls (a switch is not a call); every count is per operation."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "syscalls_table.py"

# `perf stat -x,` lines: count, unit, event, ...
STAT = """# started on Thu Dec  3 2026
100,,syscalls:sys_enter_read,1000,100.00,,
50,,syscalls:sys_enter_epoll_wait,1000,100.00,,
0,,syscalls:sys_enter_ioctl,1000,100.00,,
30,,context-switches,1000,100.00,,
"""


class SyscallsTableTest(unittest.TestCase):
    def test_context_switches_are_a_row_of_their_own_not_a_call(self):
        with tempfile.TemporaryDirectory() as d:
            stat, ops = Path(d) / "perf.stat", Path(d) / "ops.json"
            stat.write_text(STAT)
            ops.write_text(json.dumps({"ops": 60}) + "\n" + json.dumps({"ops": 40}) + "\n")
            out = subprocess.run([sys.executable, str(SCRIPT), "mtlsd", str(stat), str(ops)],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
        rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
                for line in out.splitlines() if line.startswith("| ")}
        self.assertEqual(rows["operations counted"], "100")
        self.assertEqual(rows["**all**"], "**1.50**")  # read 1.00 + epoll_wait 0.50
        self.assertEqual(rows["read"], "1.00")
        self.assertEqual(rows["*context switches (not a system call)*"], "*0.30*")
        self.assertNotIn("context-switches", rows)
        self.assertNotIn("ioctl", rows)  # never called


if __name__ == "__main__":
    unittest.main()
