"""The rows of bench/report.py's tables and issue 13's targets.

A row's value is a function (data, server, round) -> number or None, where data holds every
loadgen result of the run keyed by (workload, mode, server, round). report.py takes it for every
round and shows the median and the min-max.

Targets (issue 13, "Targets"): kind "ratio" holds when mtlsd/nginx and mtlsd/haproxy (each where
measured, medians) are >= the bound on a "higher" row or <= it on a "lower" row; kind "abs" holds
when mtlsd's own median is within the bound.
"""


def result(workload, key, mode=None):
    """The value `key` of the result of `workload` (and `mode`, when a workload runs several)."""
    def value(data, server, rnd):
        r = data.get((workload, mode, server, rnd))
        if r is None and mode is None:
            r = next((v for (w, _, s, n), v in data.items()
                      if w == workload and s == server and n == rnd), None)
        v = (r or {}).get(key)
        return v if isinstance(v, (int, float)) else None
    return value


def relative(a, b, scale=1.0, offset=0.0):
    """offset + scale * a/b, per round (both values of the same round)."""
    def value(data, server, rnd):
        x, y = a(data, server, rnd), b(data, server, rnd)
        return offset + scale * x / y if x is not None and y else None
    return value


def cpu_us_over(workload, baseline):
    """Server CPU µs per operation that `workload` costs beyond `baseline`, same server and round:
    1e6 / (its operations per CPU-second) minus the baseline's. The bench's HTTP workloads send
    the very requests the layer-4 `requests` workload sends, to the same upstream, so HTTP mode
    minus layer-4 is what handling HTTP costs a server per request."""
    a = result(workload, "ops_per_server_cpu_s")
    b = result(baseline, "ops_per_server_cpu_s")

    def value(data, server, rnd):
        x, y = a(data, server, rnd), b(data, server, rnd)
        return 1e6 / x - 1e6 / y if x and y else None
    return value


def access_log_cost(mode):
    """The share of mtlsd's throughput per CPU-second that `access_log: true` costs, in %: the
    two "on" windows against the two "off" windows around them (bench/lib/workloads.sh,
    wl_access_log), each side as its operations over its server CPU-seconds."""
    def per_cpu_s(data, server, rnd, state):
        ops = cpu = 0.0
        for n in (1, 2):
            r = data.get((f"access_log_{state}_{n}", mode, server, rnd)) or {}
            if not r.get("server_cpu_s") or not r.get("ops"):
                return None
            ops += r["ops"]
            cpu += r["server_cpu_s"]
        return ops / cpu

    def value(data, server, rnd):
        on, off = per_cpu_s(data, server, rnd, "on"), per_cpu_s(data, server, rnd, "off")
        return 100.0 - 100.0 * on / off if on is not None and off else None
    return value


def workers_scaling(mode):
    """Throughput (wall clock) with two workers over one worker, same round."""
    return relative(result("workers2", "ops_per_s", mode), result(mode, "ops_per_s"))


def title_with(workload, key, text):
    """A title with "{}" replaced by the values `key` took in `workload` (e.g. how many
    connections were held), which depend on --quick."""
    def title(data):
        seen = {r.get(key) for (w, *_), r in data.items() if w == workload}
        seen.discard(None)
        return text.format("/".join(f"{v:g}" for v in sorted(seen)) or "?")
    return title


def rate_reached(data):
    """Why the fixed-rate latency comparison says little, or None: a peer (or the client with
    it) fell short of the offered rate, so its latency is mostly queueing. mtlsd alone falling
    short is no excuse: its latency then fails the target by itself."""
    short = sorted({s for (w, _, s, _), r in data.items() if w == "latency"
                    and r.get("ops_per_s", 0) < 0.9 * r.get("offered_rate", 0)})
    if not short or short == ["mtlsd"]:
        return None
    return f"n/a: below 90% of the offered rate ({', '.join(short)})"


# (value, title (text or function of data), better, format, target or None)
# target: (kind, op, bound, text[, guard]) with kind "ratio" or "abs" and op ">=" or "<=";
# guard(data) returns why the verdict cannot be given (then it is shown instead), or None.
ROWS = [
    (result("handshakes", "ops_per_server_cpu_s"), "full mTLS handshakes per server CPU-s",
     "higher", "{:.0f}", ("ratio", ">=", 1.35, ">= 1.35x")),
    (result("handshakes", "ops_per_s"), "  handshakes/s (wall clock)", "info", "{:.0f}", None),
    (result("handshakes", "server_cores_busy"), "  server cores busy", "info", "{:.2f}", None),
    (result("handshakes", "lat_p50_ms"), "  handshake+request p50 ms", "lower", "{:.2f}", None),
    (result("handshakes", "tickets_per_handshake"), "  tickets/handshake", "info", "{:.2f}", None),
    (result("resumed", "ops_per_server_cpu_s"), "resumed handshakes per server CPU-s", "higher",
     "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x")),
    (result("resumed", "resumed_pct"), "  resumed %", "info", "{:.1f}", None),
    (result("resumed", "tickets_per_handshake"), "  tickets/handshake", "info", "{:.2f}", None),
    (result("requests", "ops_per_server_cpu_s"), "keep-alive requests per server CPU-s",
     "higher", "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x")),
    (result("requests", "ops_per_s"), "  requests/s (wall clock)", "info", "{:.0f}", None),
    (result("requests", "server_cores_busy"), "  server cores busy", "info", "{:.2f}", None),
    (result("latency", "lat_p50_ms"),
     title_with("latency", "offered_rate", "requests at a fixed {}/s: p50 ms"),
     "lower", "{:.3f}", ("ratio", "<=", 1.0, "<= nginx's", rate_reached)),
    (result("latency", "lat_p99_ms"), "  p99 ms", "lower", "{:.3f}",
     ("ratio", "<=", 1.0, "<= nginx's", rate_reached)),
    (result("latency", "lat_p999_ms"), "  p99.9 ms", "lower", "{:.3f}", None),
    (result("latency", "ops_per_s"), "  achieved requests/s", "info", "{:.0f}", None),
    (result("bulk", "mb_per_server_cpu_s"), "bulk download MB per server CPU-s", "higher",
     "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x")),
    (result("bulk", "mb_per_s"), "  MB/s (wall clock)", "info", "{:.0f}", None),
    (result("http", "ops_per_server_cpu_s"),
     "HTTP mode requests per server CPU-s (nginx http, HAProxy http; X-Forwarded-For, -Proto, "
     "-Client-Cert added by all three)", "higher", "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x")),
    (result("http_bare", "ops_per_server_cpu_s"), "  the same, no header added by any", "info",
     "{:.0f}", None),
    (cpu_us_over("http_bare", "requests"),
     "  CPU µs per request that handling HTTP costs (no header added, minus the layer-4 keep-alive "
     "row: the same requests; nginx stream, HAProxy tcp there)", "lower", "{:.2f}", None),
    (cpu_us_over("http", "http_bare"), "  CPU µs per request that adding the three headers costs",
     "info", "{:.2f}", None),
    (result("idle", "pss_kib_per_conn"), title_with("idle", "requested", "idle mTLS connection, PSS KiB ({})"),
     "lower", "{:.1f}", ("abs", "<=", 12, "<= 12 KiB")),
    (result("idle", "kib_per_conn"), "  RSS KiB per connection", "lower", "{:.1f}", None),
    (result("idle", "retained_pct"), "  growth kept after closing them %", "info", "{:.0f}",
     None),
    (result("idle_many", "pss_kib_per_conn"),
     title_with("idle_many", "requested", "idle mTLS connection, PSS KiB ({})"), "lower", "{:.1f}",
     ("abs", "<=", 12, "<= 12 KiB")),
    (result("idle_many", "kib_per_conn"), "  RSS KiB per connection", "lower", "{:.1f}", None),
    (result("idle_many", "retained_pct"), "  growth kept after closing them %", "info", "{:.0f}",
     None),
    (result("pending_silent", "pss_kib_per_conn"),
     title_with("pending_silent", "requested", "silent socket (no ClientHello), PSS KiB ({})"), "lower",
     "{:.1f}", ("abs", "<=", 16, "<= 16 KiB")),
    (result("pending_silent", "retained_pct"), "  growth kept after closing them %", "info",
     "{:.0f}", ("abs", "<=", 25, "<= 25% (given back)")),
    (result("pending_half", "pss_kib_per_conn"),
     title_with("pending_half", "requested", "half a ClientHello, PSS KiB ({})"), "lower", "{:.1f}",
     ("abs", "<=", 16, "<= 16 KiB")),
    (result("pending_half", "retained_pct"), "  growth kept after closing them %", "info",
     "{:.0f}", ("abs", "<=", 25, "<= 25% (given back)")),
    (access_log_cost("handshakes"), "access_log: true costs, handshakes per CPU-s %", "lower",
     "{:.1f}", ("abs", "<=", 5, "<= 5%")),
    (access_log_cost("requests"), "access_log: true costs, requests per CPU-s %", "lower",
     "{:.1f}", ("abs", "<=", 5, "<= 5%")),
    (workers_scaling("handshakes"), "workers 2 / 1: handshakes/s (see the note)", "higher",
     "{:.2f}", ("abs", ">=", 1.8, "~2x (>= 1.8)")),
    (workers_scaling("requests"), "workers 2 / 1: requests/s (see the note)", "higher", "{:.2f}",
     ("abs", ">=", 1.8, "~2x (>= 1.8)")),
    (result("reload", "resumed_pct_after_signal"),
     "reload, workers 2: resumed % after SIGHUP", "higher", "{:.1f}",
     ("abs", ">=", 95, ">= 95%")),
    (result("reload", "old_ticket_resumed_pct"), "  tickets from before SIGHUP accepted %",
     "higher", "{:.1f}", ("abs", ">=", 95, ">= 95%")),
]

NOTES = [
    "Ratios are mtlsd's median over the other server's; > 1 on 'higher' rows and < 1 on "
    "'lower' rows favour mtlsd. Per server CPU-second figures are the ones to compare on a "
    "busy machine.",
    "One worker per server, pinned to core 0, the load generator and the upstream on the other "
    "cores (workloads other than workers2 and reload).",
    "workers 2 / 1: the servers are not pinned and the load generator (whose TLS work per "
    "handshake is about the server's) runs on the same cores: on a 2-core machine two "
    "workers cannot reach 2x here. The row says what this machine shows, not what the "
    "server can do; nginx and HAProxy show the same limit.",
    "Memory: PSS from /proc/PID/smaps_rollup summed over the server's processes, growth per "
    "connection held open; 'kept after closing them' = growth still there after all are "
    "closed.",
    "Fixed-rate latency: every request has an intended start on a fixed schedule; latency is "
    "measured from it, so a stall delays and counts the requests queued behind it.",
]
