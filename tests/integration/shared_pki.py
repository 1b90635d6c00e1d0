#!/usr/bin/env python3
"""The test PKI shared by every integration file of one ctest run (tests/integration.cmake).

  shared_pki.py make DIR    generate it into DIR (anew), make DIR read-only (chmod -R a-w) and
                            record every file's SHA-256 and mode beside it (DIR.sha256)
  shared_pki.py check DIR   fail when any file in DIR was changed, added or removed since

The chmod keeps a non-root run from writing into it; root ignores file modes, so the check after
the run (the fixture's cleanup test) is what proves no test wrote into the shared PKI: a test that
revokes or re-issues must work on pki.copy_to(...).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import sys
from pathlib import Path

from pki import generate_pki


def digests(root: Path) -> dict[str, str]:
    """Each file's SHA-256 and mode: a chmod on a shared key would change what others test."""
    return {p.relative_to(root).as_posix():
            f"{hashlib.sha256(p.read_bytes()).hexdigest()} {stat.S_IMODE(p.stat().st_mode):o}"
            for p in sorted(root.rglob("*")) if p.is_file()}


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable
                   else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make(root: Path) -> int:
    if root.exists():
        set_writable(root, True)
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    generate_pki(root)
    set_writable(root, False)
    manifest(root).write_text(json.dumps(digests(root), indent=1))
    print(f"shared test PKI in {root} (read-only)")
    return 0


def check(root: Path) -> int:
    before = json.loads(manifest(root).read_text())
    after = digests(root)
    changed = sorted(name for name in before.keys() & after.keys() if before[name] != after[name])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    for label, names in (("changed", changed), ("added", added), ("removed", removed)):
        for name in names:
            print(f"shared test PKI: {label}: {root / name} (a test wrote into the shared PKI: "
                  f"give it pki.copy_to(tmp_path / 'pki'))")
    if changed or added or removed:
        return 1
    print(f"shared test PKI unchanged: {len(after)} files")
    return 0


def manifest(root: Path) -> Path:
    return root.with_name(root.name + ".sha256")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        sys.exit(__doc__)
    sys.exit((make if sys.argv[1] == "make" else check)(Path(sys.argv[2]).resolve()))
