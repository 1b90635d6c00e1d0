#!/usr/bin/env python3
"""Set the profiles of one workload side by side: CPU per operation by library.

    bench/profile_compare.py bench/profiles/handshakes.txt bench/profiles/handshakes-nginx.txt ...

Each file is what `bench/run.sh --profile WL --only ...` writes: the load generator's JSON
result (commented, first line used) and the "Self time by library" section. A server's CPU per
operation (server_cpu_s / ops) is split by the share of perf samples in each library, so the
table says how many microseconds of an operation went to OpenSSL, libc, the kernel and the
server's own code.

The last column is the ceiling that profile puts on any proxy measured against that server: a
proxy with no code of its own that makes exactly the server's library and kernel calls spends
(total - own) per operation, so it is at most total / (total - own) times as fast per CPU-second.
Beating the server by more than that means doing less OpenSSL, libc or kernel work per operation
than it does, not writing faster code of one's own.
"""
import json
import re
import sys
from pathlib import Path

# The libraries every server shares; anything else is the server's own code (its binary, its
# modules, libstdc++ for mtlsd) or "other" (below perf's 0.3% cut).
SHARED = {"libcrypto.so.3": "libcrypto", "libssl.so.3": "libssl", "libc.so.6": "libc",
          "[kernel.kallsyms]": "kernel"}
COLUMNS = ["libcrypto", "libssl", "libc", "kernel", "own", "other"]


def parse(path):
    """(server, µs per op, {column: share}) of one profile file."""
    text = Path(path).read_text()
    result = None
    for line in text.splitlines():
        m = re.match(r"#\s+(\{.*\})\s*$", line)
        if m:
            result = json.loads(m.group(1))
            break
    if not result or not result.get("ops") or not result.get("server_cpu_s"):
        raise SystemExit(f"{path}: no load generator result with ops and server_cpu_s")
    section = text.split("## Self time by library", 1)
    if len(section) < 2:
        raise SystemExit(f"{path}: no 'Self time by library' section (rerun bench/run.sh --profile)")
    shares = dict.fromkeys(COLUMNS, 0.0)
    for line in section[1].split("\n## ", 1)[0].splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            shares[SHARED.get(m.group(2), "own")] += float(m.group(1)) / 100.0
    shares["other"] = max(0.0, 1.0 - sum(shares[c] for c in COLUMNS if c != "other"))
    us_per_op = 1e6 * result["server_cpu_s"] / result["ops"]
    return result["label"], us_per_op, shares


def main(paths):
    rows = [parse(p) for p in paths]
    print("| server | CPU µs per op | " + " | ".join(COLUMNS) +
          " | ceiling for a proxy with no code of its own |")
    print("|---|---:|" + "---:|" * len(COLUMNS) + "---:|")
    for server, total, shares in rows:
        cells = [f"{total * shares[c]:.0f} ({100 * shares[c]:.0f}%)" for c in COLUMNS]
        floor = total * (1.0 - shares["own"])
        ceiling = f"{total / floor:.2f}x {server}" if server != "mtlsd" and floor > 0 else ""
        print(f"| {server} | {total:.0f} | " + " | ".join(cells) + f" | {ceiling} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
