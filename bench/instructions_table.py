#!/usr/bin/env python3
"""User-space instructions per operation, by library, one row per server
(bench/run.sh --instructions WORKLOAD).

    bench/instructions_table.py SERVER CALLGRIND_OUT JSON [SERVER CALLGRIND_OUT JSON ...]

CALLGRIND_OUT is a callgrind dump taken with instrumentation on only during the load generator's
window (after its warm-up, which opens the connections); JSON is the load generator's result lines of that run (its "ops" summed).
Instruction counts, unlike CPU time, do not move with the machine's load; they leave out the
kernel (bench/run.sh --syscalls counts its calls) and what the cache and branch misses cost.
"""
import re
import subprocess
import sys

from loadgen_ops import ops_of

GROUPS = ("own", "libssl", "libcrypto", "libc", "libstdc++", "other")

# Besides its executable, the objects that are a server's own code: nginx's dynamic modules
# (ngx_stream_module.so is its whole layer-4 proxy, ngx_http_*.so its HTTP modules), which
# were counted as "other" (review: 2,650 instructions per handshake against 7,220 in nginx).
OWN_MODULES = {"nginx": ("ngx_",)}


def group(obj, server):
    name = obj.rsplit("/", 1)[-1]
    if name.startswith(OWN_MODULES.get(server, ())):
        return "own"
    if name.startswith("libssl"):
        return "libssl"
    if name.startswith("libcrypto"):
        return "libcrypto"
    if name.startswith("libc.so") or name.startswith("ld-linux"):
        return "libc"
    if name.startswith("libstdc++"):
        return "libstdc++"
    if name == server or name.startswith(server):
        return "own"
    return "other"


def per_op(server, dump, json_path):
    ops = ops_of(json_path)
    out = subprocess.run(["callgrind_annotate", "--threshold=100", dump], capture_output=True,
                         text=True, check=True).stdout
    by_group = dict.fromkeys(GROUPS, 0)
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S.*\[(.+)\]\s*$", line)
        if m:
            by_group[group(m.group(2), server)] += int(m.group(1).replace(",", ""))
            continue
        # Rows callgrind_annotate prints without an object: code inlined from another file
        # (glibc's ./nptl/ rwlocks, which OpenSSL's locks call, ~180k instructions per
        # handshake, and ./malloc/arena.c; headers inlined into the server). Dropping them
        # hid ~3% of a handshake, and the part of it that differs between servers.
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):\S", line)
        if m and "PROGRAM TOTALS" not in line:
            path = m.group(2)
            key = "libc" if path.startswith("./") else "own" if path.startswith("/") else "other"
            by_group[key] += int(m.group(1).replace(",", ""))
    return ops, by_group


def main(args):
    if len(args) % 3 or not args:
        raise SystemExit(__doc__)
    print("| server | operations | instructions per op | " +
          " | ".join(GROUPS) + " |")
    print("|---|---:|---:|" + "---:|" * len(GROUPS))
    for i in range(0, len(args), 3):
        server = args[i]
        ops, g = per_op(server, args[i + 1], args[i + 2])
        total = sum(g.values())
        cells = " | ".join(f"{g[k] / ops:,.0f}" for k in GROUPS)
        print(f"| {server} | {ops} | **{total / ops:,.0f}** | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
