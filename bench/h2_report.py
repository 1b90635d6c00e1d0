#!/usr/bin/env python3
"""bench/h2.sh's results (one JSON object per line: label, mode h2|h1, h2load's counts, the
proxy's CPU seconds) as a table in bench/report.py's layout, with the ratio mtlsd/nginx.

usage: h2_report.py RESULTS.jsonl [--note TEXT]
"""
import argparse
import json
import sys

from report import build_table, print_table

# (mode, key, row title, better, format)
ROWS = [
    ("h2", "ops_per_s", "HTTP/2 requests/s (wall clock)", "higher", "{:.0f}"),
    ("h2", "ops_per_server_cpu_s", "HTTP/2 requests per proxy CPU-s", "higher", "{:.0f}"),
    ("h2", "server_cores_busy", "  proxy cores busy", "info", "{:.2f}"),
    ("h2", "lat_mean_ms", "  request mean ms", "lower", "{:.2f}"),
    ("h1", "ops_per_s", "HTTP/1.1 keep-alive requests/s", "higher", "{:.0f}"),
    ("h1", "ops_per_server_cpu_s", "HTTP/1.1 requests per proxy CPU-s", "higher", "{:.0f}"),
    ("h1", "server_cores_busy", "  proxy cores busy", "info", "{:.2f}"),
    ("h1", "lat_mean_ms", "  request mean ms", "lower", "{:.2f}"),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    data = {}  # (server, mode) -> result
    with open(args.results, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            r = json.loads(line)
            data[(r["label"], r["mode"])] = r
    if not data:
        print("no results")
        return 1
    rows = [(lambda d, s, m=mode, k=key: (d.get((s, m)) or {}).get(k), title, better, fmt)
            for mode, key, title, better, fmt in ROWS]
    print_table(build_table(data, rows))
    errors = [f"{s}/{m}: {r['errors']}" for (s, m), r in sorted(data.items()) if r.get("errors")]
    print()
    print("errors: " + (", ".join(errors) if errors else "none"))
    if args.note:
        print("run: " + args.note)
    print("h2load with a client certificate (bench/h2load_client_cert.c); both proxies keep an "
          "HTTP/1.1 keep-alive pool to the same upstream (nginx has no HTTP/2 upstream).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
