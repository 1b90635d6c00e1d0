"""The operations a load generator run counted: its result lines' "ops", summed (shared by the
bench/*_table.py scripts, which divide perf's counts of the same run by it)."""
import json


def ops_of(json_path):
    ops = 0
    for line in open(json_path):
        if line.strip():
            ops += json.loads(line).get("ops", 0)
    if ops <= 0:
        raise SystemExit(f"{json_path}: no operations counted")
    return ops
