"""bench/run.sh --flood (issue 17): the rows of its table.

Each row's value is a function (data, server) -> number or None, where data holds the loadgen
results keyed by (server, scenario). Scenarios: others_alone, flood_alone, flood_with_others,
others_flooded (bench/lib/flood.sh).
"""


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
