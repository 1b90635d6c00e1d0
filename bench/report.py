#!/usr/bin/env python3
"""Turn bench/run.sh's results (one mtlsd_loadgen JSON object per line) into a table.

usage: report.py RESULTS.jsonl [--note TEXT]

Columns: each server's absolute numbers, then mtlsd/nginx and mtlsd/haproxy. Every row says
whether higher or lower is better; a ratio > 1 on a "higher" row (or < 1 on a "lower" row)
means mtlsd does better than that server.
"""
import argparse
import json
import sys

SERVERS = ["mtlsd", "nginx", "haproxy"]

# (mode, key in the loadgen output, row title, better, format)
ROWS = [
    ("handshakes", "ops_per_s", "handshakes/s (wall clock)", "higher", "{:.0f}"),
    ("handshakes", "ops_per_server_cpu_s", "handshakes per server CPU-s", "higher", "{:.0f}"),
    ("handshakes", "server_cores_busy", "  server cores busy", "info", "{:.2f}"),
    ("handshakes", "lat_p50_ms", "  handshake+request p50 ms", "lower", "{:.2f}"),
    ("handshakes", "tickets_per_handshake", "  tickets/handshake", "info", "{:.2f}"),
    ("requests", "ops_per_s", "keep-alive requests/s", "higher", "{:.0f}"),
    ("requests", "ops_per_server_cpu_s", "requests per server CPU-s", "higher", "{:.0f}"),
    ("requests", "server_cores_busy", "  server cores busy", "info", "{:.2f}"),
    ("requests", "lat_p99_ms", "  request p99 ms", "lower", "{:.2f}"),
    ("bulk", "mb_per_s", "bulk MB/s", "higher", "{:.0f}"),
    ("bulk", "mb_per_server_cpu_s", "bulk MB per server CPU-s", "higher", "{:.0f}"),
    ("bulk", "server_cores_busy", "  server cores busy", "info", "{:.2f}"),
    ("idle", "kib_per_conn", "idle KiB per connection", "lower", "{:.1f}"),
    ("idle", "connections", "  idle connections held", "info", "{:.0f}"),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    data = {}  # (server, mode) -> result
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            data[(r["label"], r["mode"])] = r

    servers = [s for s in SERVERS if any(k[0] == s for k in data)]
    ratio_cols = [s for s in servers if s != "mtlsd"] if "mtlsd" in servers else []

    header = ["metric", "better"] + servers + [f"mtlsd/{s}" for s in ratio_cols]
    table = [header]
    for mode, key, title, better, fmt in ROWS:
        row = [title, better if better != "info" else ""]
        values = {}
        for s in servers:
            r = data.get((s, mode))
            v = r.get(key) if r else None
            values[s] = v
            row.append(fmt.format(v) if isinstance(v, (int, float)) else "-")
        for s in ratio_cols:
            a, b = values.get("mtlsd"), values.get(s)
            if better != "info" and isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                row.append(f"{a / b:.2f}")
            else:
                row.append("")
        table.append(row)

    errors = []
    for (s, mode), r in sorted(data.items()):
        if r.get("errors"):
            errors.append(f"{s}/{mode}: {r['errors']}")

    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("errors: " + (", ".join(errors) if errors else "none"))
    if args.note:
        print("run: " + args.note)
    print("ratios > 1 on 'higher' rows and < 1 on 'lower' rows favour mtlsd; "
          "per server CPU-second figures are the ones to compare on a busy machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
