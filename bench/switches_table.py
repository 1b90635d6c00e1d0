#!/usr/bin/env python3
"""Context switches and CPU per operation, one column per server (bench/run.sh --switches WL).

    bench/switches_table.py SERVER STAT JSON [SERVER STAT JSON ...]

STAT is `perf stat -x,` output over the context-switches and task-clock events only (no
tracepoints, which would slow the server down and so change how often it catches up with its
load and sleeps), taken from the server's start to its stop; JSON is the load generator's
result lines of that run (its "ops" summed). A context switch of a server that has its core to
itself is nearly always a sleep in epoll_wait and the wake-up after it.
"""
import sys

from loadgen_ops import ops_of


def per_op(stat_path, json_path):
    ops = ops_of(json_path)
    switches = cpu_ms = None
    for line in open(stat_path):
        fields = line.strip().split(",")
        if len(fields) < 3:
            continue
        if fields[2] == "context-switches" and fields[0].isdigit():
            switches = int(fields[0])
        elif fields[2] == "task-clock" and fields[0].replace(".", "", 1).isdigit():
            cpu_ms = float(fields[0])  # perf writes "<not counted>" when it could not count
    if switches is None or cpu_ms is None:
        raise SystemExit(f"{stat_path}: no context-switches or task-clock count")
    return ops, switches / ops, cpu_ms * 1000 / ops


def main(args):
    if len(args) < 3 or len(args) % 3:
        raise SystemExit(__doc__)
    rows = [(args[i], *per_op(args[i + 1], args[i + 2])) for i in range(0, len(args), 3)]
    print("| | " + " | ".join(name for name, *_ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print("| operations counted | " + " | ".join(f"{ops}" for _, ops, _, _ in rows) + " |")
    print("| context switches per operation | "
          + " | ".join(f"{s:.3f}" for _, _, s, _ in rows) + " |")
    print("| CPU µs per operation (task-clock) | "
          + " | ".join(f"{c:.1f}" for _, _, _, c in rows) + " |")
    print("| operations per context switch | "
          + " | ".join(f"{1 / s:.1f}" if s else "-" for _, _, s, _ in rows) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
