#!/usr/bin/env python3
"""System calls per operation, one column per server (bench/run.sh --syscalls WORKLOAD).

    bench/syscalls_table.py SERVER STAT JSON [SERVER STAT JSON ...]

STAT is `perf stat -x,` output over the syscalls:sys_enter_* tracepoints and the
context-switches event (a row of its own, not counted in "all"), taken from the
server's start to its stop; JSON is the load generator's result lines of that run (its "ops"
summed). bench/run.sh runs the load generator without warm-up for this, so the operations it
counts are the ones perf saw, less the few of the readiness check.
"""
import sys

from loadgen_ops import ops_of


def per_op(stat_path, json_path):
    ops = ops_of(json_path)
    counts = {}
    for line in open(stat_path):
        fields = line.strip().split(",")
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        name = fields[2].removeprefix("syscalls:sys_enter_")
        counts[name] = counts.get(name, 0) + int(fields[0])
    switches = counts.pop("context-switches", 0)
    return ops, {k: v / ops for k, v in counts.items() if v}, switches / ops


def main(args):
    if len(args) < 3 or len(args) % 3:
        raise SystemExit(__doc__)
    servers = [(args[i], *per_op(args[i + 1], args[i + 2])) for i in range(0, len(args), 3)]
    names = sorted({n for _, _, c, _ in servers for n in c},
                   key=lambda n: -max(c.get(n, 0) for _, _, c, _ in servers))
    print("| syscall | " + " | ".join(f"{s} (per op)" for s, _, _, _ in servers) + " |")
    print("|---|" + "---:|" * len(servers))
    print("| operations counted | " + " | ".join(f"{ops}" for _, ops, _, _ in servers) + " |")
    print("| **all** | " + " | ".join(f"**{sum(c.values()):.2f}**" for _, _, c, _ in servers) + " |")
    for n in names:
        if max(c.get(n, 0) for _, _, c, _ in servers) < 0.01:
            continue  # start-up and shutdown calls, once per run
        print(f"| {n} | " + " | ".join(f"{c.get(n, 0):.2f}" for _, _, c, _ in servers) + " |")
    print("| *context switches (not a system call)* | "
          + " | ".join(f"*{w:.2f}*" for _, _, _, w in servers) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
