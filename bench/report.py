#!/usr/bin/env python3
"""Turn bench/run.sh's results (one mtlsd_loadgen JSON object per line) into a table.

usage: report.py RESULTS.jsonl [--note TEXT]

Columns: each server's absolute numbers, then mtlsd/nginx and mtlsd/haproxy. Every row says
whether higher or lower is better; a ratio > 1 on a "higher" row (or < 1 on a "lower" row)
means mtlsd does better than that server.

Lines with a "scenario" (bench/run.sh --flood) make a table of their own: the flood's rates and
cost, and the other sources' success and latency alone and during the flood, with the ratio
flooded/alone per server (the flood's cost to them, visible as a factor).
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


def _get(scenario, key):
    return lambda d, s: (d.get((s, scenario)) or {}).get(key)


def _ratio(scenario_a, scenario_b, key):
    def f(d, s):
        a, b = _get(scenario_a, key)(d, s), _get(scenario_b, key)(d, s)
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
    return f


# --flood: (value of (data, server), row title, better, format). Scenarios: others_alone,
# flood_alone, flood_with_others, others_flooded (bench/run.sh).
FLOOD_ROWS = [
    (_get("flood_alone", "offered_per_s"), "flood alone: connections/s offered", "info", "{:.0f}"),
    (_get("flood_alone", "refused_per_s"), "  refused/s", "higher", "{:.0f}"),
    (_get("flood_alone", "window_errors"), "  not refused (admitted or failed)", "lower", "{:.0f}"),
    (_get("flood_alone", "server_cpu_us_per_refused"), "  server CPU us per refused connection",
     "lower", "{:.1f}"),
    (_get("flood_alone", "server_cores_busy"), "  server cores busy", "info", "{:.2f}"),
    (_get("flood_alone", "lat_p50_ms"), "  time to refusal p50 ms", "lower", "{:.2f}"),
    (_get("flood_with_others", "offered_per_s"), "flood with others: connections/s offered", "info",
     "{:.0f}"),
    (_get("flood_with_others", "refused_per_s"), "  refused/s", "higher", "{:.0f}"),
    (_get("flood_with_others", "window_errors"), "  not refused (admitted or failed)", "lower",
     "{:.0f}"),
    (_get("flood_with_others", "server_cores_busy"), "  server cores busy", "info", "{:.2f}"),
    (_get("others_alone", "ops_per_s"), "others alone: handshakes/s", "info", "{:.1f}"),
    (_get("others_alone", "success_pct"), "  success %", "higher", "{:.1f}"),
    (_get("others_alone", "lat_p50_ms"), "  handshake+request p50 ms", "lower", "{:.2f}"),
    (_get("others_alone", "lat_p99_ms"), "  handshake+request p99 ms", "lower", "{:.2f}"),
    (_get("others_flooded", "ops_per_s"), "others during the flood: handshakes/s", "info",
     "{:.1f}"),
    (_get("others_flooded", "success_pct"), "  success %", "higher", "{:.1f}"),
    (_get("others_flooded", "lat_p50_ms"), "  handshake+request p50 ms", "lower", "{:.2f}"),
    (_get("others_flooded", "lat_p99_ms"), "  handshake+request p99 ms", "lower", "{:.2f}"),
    (_ratio("others_flooded", "others_alone", "lat_p50_ms"), "  p50 flooded/alone", "lower",
     "{:.2f}"),
    (_ratio("others_flooded", "others_alone", "lat_p99_ms"), "  p99 flooded/alone", "lower",
     "{:.2f}"),
]


def print_table(table):
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def build_table(data, rows):
    """rows: (value of (data, server), title, better, format)."""
    servers = [s for s in SERVERS if any(k[0] == s for k in data)]
    ratio_cols = [s for s in servers if s != "mtlsd"] if "mtlsd" in servers else []
    header = ["metric", "better"] + servers + [f"mtlsd/{s}" for s in ratio_cols]
    table = [header]
    for value, title, better, fmt in rows:
        row = [title, better if better != "info" else ""]
        values = {}
        for s in servers:
            v = value(data, s)
            values[s] = v
            row.append(fmt.format(v) if isinstance(v, (int, float)) else "-")
        for s in ratio_cols:
            a, b = values.get("mtlsd"), values.get(s)
            if better != "info" and isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                row.append(f"{a / b:.2f}")
            else:
                row.append("")
        table.append(row)
    return table


def _mode_value(mode, key):
    return lambda d, s: (d.get((s, mode)) or {}).get(key)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    data = {}  # (server, mode) -> result
    flood = {}  # (server, scenario) -> result
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("scenario"):
                flood[(r["label"], r["scenario"])] = r
            else:
                data[(r["label"], r["mode"])] = r

    if data:
        rows = [(_mode_value(mode, key), title, better, fmt)
                for mode, key, title, better, fmt in ROWS]
        print_table(build_table(data, rows))
    if flood:
        if data:
            print()
        print_table(build_table(flood, FLOOD_ROWS))

    errors = []
    for (s, mode), r in sorted(list(data.items()) + list(flood.items())):
        if r.get("errors"):
            errors.append(f"{s}/{mode}: {r['errors']}")

    print()
    print("errors: " + (", ".join(errors) if errors else "none"))
    if args.note:
        print("run: " + args.note)
    print("ratios > 1 on 'higher' rows and < 1 on 'lower' rows favour mtlsd; "
          "per server CPU-second figures are the ones to compare on a busy machine.")
    if flood:
        print("flood: errors of a flood scenario are its connections not refused; "
              "'flooded/alone' is the flood's cost to the other sources' latency.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
