#!/usr/bin/env python3
"""Checks that mtlsd's folders depend on each other one way only.

Reads every `#include "mtlsd/..."` line of src/ and include/mtlsd/ and fails (exit 1) on
  - a back edge: a folder including a folder in the same or a higher layer of LAYERS,
  - a folder cycle among the edges that remain (a second net under the layer rule),
  - a folder that LAYERS does not place (a new folder must be given its layer).
Each offence is printed with the including file and line, so the fix starts at the right place.

Usage: scripts/check_layers.py [--root DIR]        (DIR: the repository, default: this one)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# Top to bottom: a folder may include folders of lower layers only. Folders sharing a layer are
# siblings and include none of each other. "." is the top-level vocabulary headers
# (reason.hpp, termination.hpp, thread_count.hpp, version.hpp), the bottom every folder stands on.
LAYERS: list[tuple[str, ...]] = [
    ("main",),                 # src/main.cpp
    ("cli",),                  # one file per command
    ("daemon",),               # startup, reload, drain, workers, sandbox
    ("admin", "proxy"),        # the admin listener; the connection path
    ("runtime",),              # the built snapshot a connection runs on
    ("spiffe",),               # the Workload API client (gRPC)
    ("tls/revocation", "tls/spiffe"),  # revocation checks and staples; SVIDs as OpenSSL objects
    ("tls",),                  # contexts, verification, identities, credentials
    ("net",),                  # sockets and acceptors, DNS, the HTTP client, URLs
    ("config",),               # plain structs and their parser
    ("metrics", "log"),        # leaves
    ("util",),                 # small helpers with no mtlsd dependency (hex, exception text)
    (".",),
]

# Edges that break the rule today and are being removed elsewhere. Each entry names who removes
# it; delete the entry with the edge (the check then keeps it out).
ALLOWED_BACK_EDGES: dict[tuple[str, str], str] = {
}

FILE_FOLDERS = {"src/main.cpp": "main"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"mtlsd/([^"]+)"')
SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".cc", ".in"}


def rank_of_folder() -> dict[str, int]:
    return {folder: rank for rank, group in enumerate(LAYERS) for folder in group}


def folder_of(rel_path: str) -> str:
    """'tls/revocation/ocsp.hpp' -> 'tls/revocation'; 'reason.hpp' -> '.'. The deepest folder
    LAYERS names wins, so a subfolder nobody placed shows up as unplaced."""
    parent = str(Path(rel_path).parent)
    return "." if parent in ("", ".") else parent


def source_files(root: Path):
    """(path relative to root, folder) for every C++ file under src/ and include/mtlsd/."""
    for base, prefix in ((root / "src", "src/"), (root / "include" / "mtlsd", "include/mtlsd/")):
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.suffix not in SOURCE_SUFFIXES:
                continue
            rel = path.relative_to(base).as_posix()
            shown = prefix + rel
            yield path, shown, FILE_FOLDERS.get(shown, folder_of(rel))


def edges(root: Path):
    """(from folder, to folder, 'file:line', include text) for every cross-folder include."""
    for path, shown, folder in source_files(root):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target = folder_of(m.group(1))
            if target != folder:
                yield folder, target, f"{shown}:{number}", line.strip()


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One folder cycle as [a, b, ..., a], or [] when the graph has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def check(root: Path) -> list[str]:
    """Every offence, one line each; [] when the tree keeps the layer order."""
    ranks = rank_of_folder()
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for src, dst, at, text in edges(root):
        unplaced = [f for f in (src, dst) if f not in ranks]
        if unplaced:
            problems.append(f"{at}: {text}: folder {unplaced[0]!r} has no layer in "
                            f"scripts/check_layers.py LAYERS")
            continue
        if (src, dst) in ALLOWED_BACK_EDGES:
            continue
        graph.setdefault(src, set()).add(dst)
        where.setdefault((src, dst), at)
        if ranks[dst] <= ranks[src]:
            kind = "sideways" if ranks[dst] == ranks[src] else "upward"
            problems.append(f"{at}: {text}: {src} must not include {dst} ({kind} edge: "
                            f"{dst} is not below {src} in the layer order)")
    cycle = find_cycle(graph)
    if cycle:
        steps = ", ".join(f"{a} -> {b} ({where[(a, b)]})" for a, b in zip(cycle, cycle[1:]))
        problems.append(f"folder cycle: {steps}")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    if not ((args.root / "src").is_dir() or (args.root / "include" / "mtlsd").is_dir()):
        print(f"check_layers: {args.root} has neither src/ nor include/mtlsd/", file=sys.stderr)
        return 2
    problems = check(args.root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} dependency problem(s)", file=sys.stderr)
        return 1
    print(f"check_layers: ok ({len(ALLOWED_BACK_EDGES)} allowed back edge(s) remain: "
          + ", ".join(f"{a} -> {b}" for a, b in ALLOWED_BACK_EDGES) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
