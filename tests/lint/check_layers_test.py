"""scripts/check_layers.py must fail on the trees it exists to refuse (a check that cannot fail
is no check): each case writes a fake tree of two files and runs the script as ctest does."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_layers.py"


def run_on(files: dict[str, str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as d:
        for rel, text in files.items():
            path = Path(d) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return subprocess.run([sys.executable, str(SCRIPT), "--root", d],
                              capture_output=True, text=True, timeout=30)


class CheckLayersTest(unittest.TestCase):
    def test_downward_include_passes(self):
        res = run_on({"src/proxy/a.cpp": '#include "mtlsd/config/config.hpp"\n',
                      "include/mtlsd/config/config.hpp": "#pragma once\n"})
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

    def test_back_edge_fails_naming_file_and_line(self):
        res = run_on({"include/mtlsd/log/log.hpp": '#pragma once\n#include "mtlsd/config/config.hpp"\n',
                      "include/mtlsd/config/config.hpp": "#pragma once\n"})
        self.assertEqual(res.returncode, 1)
        self.assertIn("include/mtlsd/log/log.hpp:2:", res.stdout)
        self.assertIn("log must not include config", res.stdout)

    def test_sideways_edge_fails(self):
        res = run_on({"src/admin/a.cpp": '#include "mtlsd/proxy/listener.hpp"\n',
                      "include/mtlsd/proxy/listener.hpp": "#pragma once\n"})
        self.assertEqual(res.returncode, 1)
        self.assertIn("src/admin/a.cpp:1:", res.stdout)
        self.assertIn("sideways", res.stdout)

    def test_folder_cycle_fails(self):
        # Two folders no layer places yet: each is refused, and their cycle is named too.
        res = run_on({"src/alpha/a.cpp": '#include "mtlsd/beta/b.hpp"\n',
                      "include/mtlsd/beta/b.hpp": '#include "mtlsd/alpha/a.hpp"\n'})
        self.assertEqual(res.returncode, 1)
        self.assertIn("has no layer", res.stdout)

    def test_cycle_detector_finds_a_cycle(self):
        sys.path.insert(0, str(SCRIPT.parent))
        try:
            import check_layers
        finally:
            sys.path.pop(0)
        self.assertEqual(check_layers.find_cycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])
        self.assertEqual(check_layers.find_cycle({"a": {"b"}, "b": set()}), [])


if __name__ == "__main__":
    unittest.main()
