#!/usr/bin/env python3
"""Turn bench/run.sh's results (one mtlsd_loadgen JSON object per line) into a table.

usage: report.py RESULTS.jsonl [--machine machine.json] [--markdown RESULTS.md] [--quick]
                 [--note TEXT] [--floor idle_floor.txt]

Each row: every server's median over the rounds (with the min-max when there are several), the
ratios mtlsd/nginx and mtlsd/haproxy (of the medians), and issue 13's target with pass/fail
(bench/report_rows.py). --markdown also writes the table, the machine and the versions to a
file: bench/RESULTS.md is written by this script only, never by hand.

Lines with a "scenario" (bench/run.sh --flood) make a table of their own (bench/report_flood.py).
--floor adds mtlsd_idle_floor's table (bench/idle_floor.cpp: what OpenSSL alone holds per idle
connection) after the main one.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_flood import FLOOD_ROWS  # noqa: E402
from report_rows import NOTES, ROWS, unsound  # noqa: E402

SERVERS = ["mtlsd", "nginx", "haproxy"]


def load(path):
    """(data, flood): data keyed by (workload, mode, server, round); flood by (server, scenario)."""
    data, flood = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("scenario"):
                flood[(r["label"], r["scenario"])] = r
            else:
                key = (r.get("workload", r["mode"]), r["mode"], r["label"], r.get("round", 1))
                data[key] = r
    return data, flood


def summary(values):
    """(median, min, max, n) of the values that are numbers, or None."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def cell(st, fmt):
    if st is None:
        return "-"
    med, lo, hi, n = st
    return fmt.format(med) if n == 1 else f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def holds(op, value, bound):
    return value >= bound if op == ">=" else value <= bound


def verdict(target, stats, ratios, data):
    """PASS / FAIL / n/a for a row's target, or what its guard says instead (n/a, invalid or
    ERROR, and why)."""
    if target is None:
        return ""
    kind, op, bound = target[:3]
    guard = target[4] if len(target) > 4 else None
    if guard and guard(data):
        return guard(data)
    if kind == "abs":
        values = [stats["mtlsd"][0]] if stats.get("mtlsd") else []
    else:
        values = [r for r in ratios.values() if r is not None]
    if not values:
        return "n/a"
    return "PASS" if all(holds(op, v, bound) for v in values) else "FAIL"


class Row(list):
    """A table row (its cells) and `label`: what the Targets list calls it, a sub-row's title
    after its own group's (report_rows.py, ROWS)."""
    label = ""


def text_of(title, data):
    return title(data) if callable(title) else title


def build(data, rows=ROWS):
    """The table: a header row, then one row per `rows` entry that has any value."""
    rounds = sorted({k[3] for k in data})
    servers = [s for s in SERVERS if any(k[2] == s for k in data)]
    others = [s for s in servers if s != "mtlsd"] if "mtlsd" in servers else []
    header = (["metric", "better"] + servers + [f"mtlsd/{s}" for s in others]
              + ["target", "verdict"])
    table = [header]
    group = ""
    for value, title, better, fmt, target, *rest in rows:
        title = text_of(title, data)
        if not title.startswith("  "):  # a top-level row: its sub-rows' group
            group = text_of(rest[0], data) if rest else title
        stats = {s: summary(value(data, s, r) for r in rounds) for s in servers}
        guard = target[4] if target and len(target) > 4 else None
        if not any(stats.values()) and not (guard and guard(data)):
            continue  # not measured (a row whose results were all unsound still says why)
        ratios = {}
        for s in others:
            a, b = stats.get("mtlsd"), stats.get(s)
            # A difference row's median can come out below zero in noise: no ratio of those.
            ratios[s] = (a[0] / b[0] if a and b and a[0] > 0 and b[0] > 0 and better != "info"
                         else None)
        row = Row([title, "" if better == "info" else better])
        row += [cell(stats[s], fmt) for s in servers]
        row += ["" if ratios[s] is None else f"{ratios[s]:.2f}" for s in others]
        row += [target[3] if target else "", verdict(target, stats, ratios, data)]
        row.label = f"{group}: {title.strip()}" if title.startswith("  ") else title
        table.append(row)
    return table


def build_flood(flood):
    servers = [s for s in SERVERS if any(k[0] == s for k in flood)]
    others = [s for s in servers if s != "mtlsd"] if "mtlsd" in servers else []
    table = [["metric", "better"] + servers + [f"mtlsd/{s}" for s in others]]
    for value, title, better, fmt in FLOOD_ROWS:
        vals = {s: value(flood, s) for s in servers}
        row = [title, "" if better == "info" else better]
        row += [fmt.format(v) if isinstance(v, (int, float)) else "-" for v in vals.values()]
        for s in others:
            a, b = vals.get("mtlsd"), vals.get(s)
            ok = better != "info" and isinstance(a, (int, float)) and isinstance(b, (int, float))
            row.append(f"{a / b:.2f}" if ok and b else "")
        table.append(row)
    return table


def text_table(table):
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_cell(text):
    # A sub-row's indent would vanish in Markdown: show it as a leading "· ".
    text = text.replace("|", "\\|")
    return "· " + text.lstrip() if text.startswith("  ") else text


def markdown_table(table):
    lines = ["| " + " | ".join(table[0]) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(table[0]) - 2)) + "|"]
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in table[1:]]
    return "\n".join(lines)


def errors_of(data, flood):
    out = []
    for key, r in sorted(list(data.items()) + list(flood.items()), key=str):
        if r.get("errors"):
            out.append(f"{'/'.join(str(k) for k in key)}: {r['errors']}")
        if unsound(r):
            out.append(f"{'/'.join(str(k) for k in key)}: not used: {unsound(r)}")
    return out


def floor_section(floor):
    """RESULTS.md's section on OpenSSL's own floor per idle connection ([] without one)."""
    if not floor.strip():
        return []
    return [
        "## OpenSSL's own floor per idle connection", "",
        "`mtlsd_idle_floor` (bench/idle_floor.cpp), run once: a minimal epoll server that does "
        "with OpenSSL only what any proxy must (set up as mtlsd's listener; no proxy code), "
        "measured as the idle rows above are. What OpenSSL alone holds per idle connection: an "
        "idle-memory target below it cannot be met by a proxy built on this OpenSSL.", "",
        "```", floor.rstrip(), "```", "",
    ]


def markdown(table, machine, args, errors, floor=""):
    quick = args.quick
    title = "# mtlsd benchmark results" + (" — QUICK RUN (short, 1 round, noisy)" if quick else "")
    m = machine
    lines = [
        title, "",
        "Written by `bench/run.sh` (bench/report.py); never edit by hand — run the bench again.",
        "",
    ]
    if quick:
        lines += ["**This is a `--quick` run: short windows, small scale, one round, on a shared "
                  "machine. It proves every workload runs; its numbers are not the ones to "
                  "quote.**", ""]
    if m.get("mtlsd_build_type") == "Debug":
        lines += ["**mtlsd was a Debug build: its numbers say nothing about a release build.**", ""]
    lines += [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {m.get('nproc', '?')} cores, {m.get('cpu', '?')}, {m.get('kernel', '?')}",
        f"- mtlsd: {m.get('mtlsd', '?')} (commit {m.get('commit', '?')}, tree {m.get('tree', '?')},"
        f" build {m.get('mtlsd_build_type', '?')}, sha256 {m.get('mtlsd_sha256', '?')})",
        f"- measured copies (SHA-256, first 12 hex digits): mtlsd {m.get('mtlsd_sha256', '?')},"
        f" mtlsd_loadgen {m.get('loadgen_sha256', '?')},"
        f" mtlsd_idle_floor {m.get('idle_floor_sha256', '?')}",
        f"- nginx: {m.get('nginx', '?')}; HAProxy: {m.get('haproxy', '?')}",
        f"- OpenSSL: {m.get('openssl', '?')}",
        f"- run: {args.note}", "",
        markdown_table(table), "",
    ]
    lines += floor_section(floor)
    lines += ["## Targets (issue 13)", ""]
    header = table[0]
    for row in table[1:]:
        title = getattr(row, "label", "") or row[0].strip()
        if row[-1]:  # a verdict: PASS, FAIL, n/a or an error (and why)
            values = [f"{h} {c}" for h, c in zip(header[2:-2], row[2:-2]) if c not in ("", "-")]
            lines.append(f"- **{row[-1]}** {title} — target {row[-2]} ({'; '.join(values)})")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES]
    lines += ["", "errors: " + (", ".join(errors) if errors else "none"), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--machine", help="machine.json written by bench/run.sh")
    ap.add_argument("--markdown", help="also write the report as Markdown to this file")
    ap.add_argument("--quick", action="store_true", help="label the report a quick run")
    ap.add_argument("--note", default="")
    ap.add_argument("--floor", help="mtlsd_idle_floor's table (bench/idle_floor.cpp)")
    args = ap.parse_args()

    data, flood = load(args.results)
    machine = {}
    if args.machine:
        with open(args.machine, encoding="utf-8") as f:
            machine = json.load(f)
    errors = errors_of(data, flood)
    floor = ""
    if args.floor and os.path.exists(args.floor):
        with open(args.floor, encoding="utf-8") as f:
            floor = f.read()
    if data:
        table = build(data)
        print(text_table(table))
        if floor.strip():
            print()
            print(floor.rstrip())
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(markdown(table, machine, args, errors, floor))
    if flood:
        if data:
            print()
        print(text_table(build_flood(flood)))
    print()
    print("errors: " + (", ".join(errors) if errors else "none"))
    if args.note:
        print("run: " + args.note)
    for note in NOTES if data else NOTES[:1]:
        print("note: " + note)
    if flood:
        print("flood: errors of a flood scenario are its connections not refused; "
              "'flooded/alone' is the flood's cost to the other sources' latency.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
