"""scripts/check_file_sizes.py must fail on the trees it exists to refuse (a check that cannot
fail is no check): each case writes a fake tree and runs the script as ctest does."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_file_sizes.py"


def run_on(files: dict[str, int]) -> subprocess.CompletedProcess:
    """files: path -> number of lines."""
    with tempfile.TemporaryDirectory() as d:
        for rel, n in files.items():
            path = Path(d) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("// line\n" * n)
        return subprocess.run([sys.executable, str(SCRIPT), "--root", d, "--max", "400"],
                              capture_output=True, text=True, timeout=30)


class CheckFileSizesTest(unittest.TestCase):
    def test_files_at_the_limit_pass(self):
        res = run_on({"src/proxy/a.cpp": 400, "include/mtlsd/proxy/a.hpp": 12})
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

    def test_a_longer_source_fails_naming_it(self):
        res = run_on({"src/proxy/a.cpp": 401, "src/proxy/b.cpp": 10})
        self.assertEqual(res.returncode, 1)
        self.assertIn("src/proxy/a.cpp: 401 lines", res.stdout)
        self.assertNotIn("b.cpp", res.stdout)

    def test_a_longer_header_fails(self):
        res = run_on({"include/mtlsd/net/x.hpp": 500})
        self.assertEqual(res.returncode, 1)
        self.assertIn("include/mtlsd/net/x.hpp: 500 lines", res.stdout)

    def test_other_folders_and_files_are_not_held_to_it(self):
        res = run_on({"bench/loadgen.cpp": 900, "src/config/notes.md": 900})
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)


if __name__ == "__main__":
    unittest.main()
