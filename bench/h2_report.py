#!/usr/bin/env python3
"""bench/h2.sh's results (one JSON object per line: label, mode h2|h1, h2load's counts, the
proxy's CPU seconds) as a table in bench/report.py's layout, with the ratio mtlsd/nginx.

usage: h2_report.py RESULTS.jsonl [--note TEXT]
"""
import argparse
import sys

from report import build, load, text_table

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
    data, _ = load(args.results)  # keyed (mode, mode, server, round): no workload field here
    if not data:
        print("no results")
        return 1
    rows = [(lambda d, s, r, m=mode, k=key: (d.get((m, m, s, r)) or {}).get(k), title, better,
             fmt, None) for mode, key, title, better, fmt in ROWS]
    print(text_table([row[:-2] for row in build(data, rows)]))  # no targets: drop those columns
    errors = [f"{s}/{m}: {r['errors']}" for (_, m, s, _), r in
              sorted(data.items(), key=lambda item: (item[0][2], item[0][1])) if r.get("errors")]
    print()
    print("errors: " + (", ".join(errors) if errors else "none"))
    if args.note:
        print("run: " + args.note)
    print("h2load with a client certificate (bench/h2load_client_cert.c); both proxies keep an "
          "HTTP/1.1 keep-alive pool to the same upstream (nginx has no HTTP/2 upstream).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
