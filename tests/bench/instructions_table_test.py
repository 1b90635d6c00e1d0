"""bench/instructions_table.py: a server's own code includes its own loadable modules (nginx's
ngx_stream_module.so, its whole layer-4 proxy, and ngx_http_*.so), not only its executable; a
library of the system stays "other"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "instructions_table.py"

# What `callgrind_annotate --threshold=100 DUMP` prints, cut down: instructions by function,
# each with the object it is in.
ANNOTATE = """\
--------------------------------------------------------------------------------
200,000 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir                file:function
--------------------------------------------------------------------------------
150,000 (75.00%)  ???:0x00000000001c2e40 [/usr/lib/x86_64-linux-gnu/libcrypto.so.3]
 30,000 (15.00%)  ???:ngx_epoll_process_events [/usr/sbin/nginx]
 12,000 ( 6.00%)  ???:ngx_stream_proxy_handler [/usr/lib/nginx/modules/ngx_stream_module.so]
  5,000 ( 2.50%)  ???:ngx_http_geoip_variable [/usr/lib/nginx/modules/ngx_http_geoip_module.so]
  3,000 ( 1.50%)  ???:inflate [/usr/lib/x86_64-linux-gnu/libz.so.1.2.13]
"""


def table(server: str) -> dict[str, str]:
    """The script's row for SERVER over the dump above and 10 operations, by column."""
    with tempfile.TemporaryDirectory() as d:
        tool = Path(d) / "callgrind_annotate"  # stands in for valgrind's, on PATH first
        tool.write_text("#!/bin/sh\ncat <<'END'\n" + ANNOTATE + "END\n")
        tool.chmod(0o755)
        ops = Path(d) / "ops.json"
        ops.write_text(json.dumps({"ops": 10}) + "\n")
        env = dict(os.environ, PATH=f"{d}:{os.environ.get('PATH', '')}")
        out = subprocess.run([sys.executable, str(SCRIPT), server, str(Path(d) / "dump"),
                              str(ops)], capture_output=True, text=True, timeout=30, env=env,
                             check=True, cwd=SCRIPT.parent).stdout
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return dict(zip(header, (c.strip() for c in lines[-1].strip("|").split("|"))))


class InstructionsTableTest(unittest.TestCase):
    def test_nginx_modules_are_its_own_code(self):
        row = table("nginx")
        # nginx 30,000 + ngx_stream_module.so 12,000 + ngx_http_geoip_module.so 5,000, per op
        self.assertEqual(row["own"], "4,700")
        self.assertEqual(row["other"], "300")  # libz: not nginx's
        self.assertEqual(row["libcrypto"], "15,000")
        self.assertEqual(row["instructions per op"], "**20,000**")

    def test_another_server_does_not_own_nginx_modules(self):
        row = table("haproxy")
        self.assertEqual(row["own"], "0")
        self.assertEqual(row["other"], "5,000")


if __name__ == "__main__":
    unittest.main()
