#!/usr/bin/env python3
"""Checks that every source file of mtlsd stays small enough to read in one sitting.

Fails (exit 1) when a C++ file under src/ or include/ is longer than MAX_LINES, naming each
such file and its length. A file that grows past it wants splitting along what it holds (how
config/load.cpp became one parser per section), not a higher limit.

Usage: scripts/check_file_sizes.py [--root DIR] [--max N]   (DIR: the repository, default: this one)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MAX_LINES = 400
SUFFIXES = {".cpp", ".hpp", ".h", ".cc"}


def too_long(root: Path, max_lines: int) -> list[tuple[str, int]]:
    found = []
    for top in ("src", "include"):
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            with path.open(encoding="utf-8", errors="replace") as f:
                lines = sum(1 for _ in f)
            if lines > max_lines:
                found.append((str(path.relative_to(root)), lines))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--max", type=int, default=MAX_LINES)
    args = ap.parse_args()
    found = too_long(args.root, args.max)
    for rel, lines in found:
        print(f"{rel}: {lines} lines, more than {args.max}: split it along what it holds")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
