"""The rows of bench/report.py's tables and issue 13's targets.

A row's value is a function (data, server, round) -> number or None, where data holds every
loadgen result of the run keyed by (workload, mode, server, round). report.py takes it for every
round and shows the median and the min-max.

Targets (issue 13, "Targets"): kind "ratio" holds when mtlsd/nginx and mtlsd/haproxy (each where
measured, medians) are >= the bound on a "higher" row or <= it on a "lower" row; kind "abs" holds
when mtlsd's own median is within the bound.

A result bench/run.sh marked "invalid" (no evidence the workload did what it measures: no reload
seen, an access log without its lines), or an idle result whose server closed some of the
connections before the sample ("closed"), gives no value: its rows show "-", and the verdict of
a row it feeds is an error, never a PASS.
"""
import statistics


def unsound(r):
    """Why a loadgen result cannot be used, or None."""
    if r.get("invalid"):
        return r["invalid"]
    if r.get("mode") == "idle" and r.get("closed", 0) > 0:
        held = r.get("connections", 0) + r["closed"]
        return f"{r['closed']} of {held} connections closed before the sample"
    return None


def result(workload, key, mode=None):
    """The value `key` of the result of `workload` (and `mode`, when a workload runs several)."""
    def value(data, server, rnd):
        r = data.get((workload, mode, server, rnd))
        if r is None and mode is None:
            r = next((v for (w, _, s, n), v in data.items()
                      if w == workload and s == server and n == rnd), None)
        if r is None or unsound(r):
            return None
        v = r.get(key)
        return v if isinstance(v, (int, float)) else None
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


def pooled(workload, mode, key, per, data, server, rnd):
    """sum(key) / sum(per) over the two windows WORKLOAD_1 and WORKLOAD_2 of a mirrored pair
    (bench/lib/workloads.sh: off, on, on, off), or None when either is missing or unsound."""
    num = den = 0.0
    for n in (1, 2):
        r = data.get((f"{workload}_{n}", mode, server, rnd)) or {}
        if not r.get(key) or not r.get(per) or unsound(r):
            return None
        num += r[key]
        den += r[per]
    return num / den


def access_log_cost(mode, workload="access_log"):
    """The share of mtlsd's throughput per CPU-second that `access_log: true` costs, in %: the
    two "on" windows against the two "off" windows around them (bench/lib/workloads.sh,
    access_log_windows), each side as its operations over its server CPU-seconds. WORKLOAD:
    access_log (layer 4) or access_log_http (HTTP mode, one line per request)."""
    def per_cpu_s(data, server, rnd, state):
        return pooled(f"{workload}_{state}", mode, "ops", "server_cpu_s", data, server, rnd)

    def value(data, server, rnd):
        on, off = per_cpu_s(data, server, rnd, "on"), per_cpu_s(data, server, rnd, "off")
        return 100.0 - 100.0 * on / off if on is not None and off else None
    return value


def workers_scaling(mode):
    """Throughput (wall clock) with two workers over one, both unpinned, in the adjacent windows
    of the same round (bench/lib/workloads.sh, wl_workers2: 1, 2, 2, 1 workers)."""
    def value(data, server, rnd):
        two = pooled("workers2_w2", mode, "ops", "window_s", data, server, rnd)
        one = pooled("workers2_w1", mode, "ops", "window_s", data, server, rnd)
        return two / one if two is not None and one else None
    return value


def one_worker_busy(mode):
    """The server cores the one-worker windows of workers2 kept busy (CPU-s over wall-s)."""
    def value(data, server, rnd):
        return pooled("workers2_w1", mode, "server_cpu_s", "window_s", data, server, rnd)
    return value


def median_of(value, data, server):
    """The median over the rounds of a row's value for one server, or None."""
    vals = [value(data, server, rnd) for rnd in sorted({k[3] for k in data})]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def workers_guard(mode):
    """Why the workers 2 / 1 verdict cannot be given: a ratio above 2 (two workers cannot do
    more than twice one's work: the baseline was held back) is invalid; the ratio says nothing
    of the server unless the one worker was near saturation (its cores >= 0.9 busy), else the
    load generator set the pace of both (the latency rows' guard is alike)."""
    scaling, busy = workers_scaling(mode), one_worker_busy(mode)

    def guard(data):
        servers = sorted({k[2] for k in data})
        over = [(s, median_of(scaling, data, s)) for s in servers]
        over = [f"{s} {v:.2f}" for s, v in over if v is not None and v > 2]
        if over:
            return f"invalid: above 2 ({', '.join(over)})"
        b = median_of(busy, data, "mtlsd")
        if b is not None and b < 0.9:
            return f"n/a: one worker not near saturation (its cores {b:.2f} busy, < 0.9)"
        return None
    return guard


def windows(workload):
    """The names the four windows of a mirrored workload are tagged with (access_log...)."""
    return [f"{workload}_{state}_{n}" for state in ("off", "on") for n in (1, 2)]


def unsound_guard(*workloads):
    """An error verdict when one of mtlsd's results of these workloads (names as tagged) is
    unsound (see unsound()), else None."""
    def guard(data):
        for (w, _, s, _), r in sorted(data.items(), key=str):
            if s == "mtlsd" and w in workloads:
                why = unsound(r)
                if why:
                    return f"ERROR: {why}"
        return None
    return guard


def first_of(*guards):
    """The first of the guards that says why (a guard: data -> text or None)."""
    def guard(data):
        return next((g(data) for g in guards if g(data)), None)
    return guard


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


# (value, title (text or function of data), better, format, target or None[, group])
# target: (kind, op, bound, text[, guard]) with kind "ratio" or "abs" and op ">=" or "<=";
# guard(data) returns why the verdict cannot be given (then it is shown instead), or None.
# group (text or function of data), on a top-level row: what report.py's Targets list puts
# before the titles of its sub-rows ("GROUP: p99 ms"); without it, the row's own title.
ROWS = [
    (result("handshakes", "ops_per_server_cpu_s"), "full mTLS handshakes per server CPU-s",
     "higher", "{:.0f}", ("ratio", ">=", 1.35, ">= 1.35x"), "full mTLS handshakes"),
    (result("handshakes", "ops_per_s"), "  handshakes/s (wall clock)", "info", "{:.0f}", None),
    (result("handshakes", "server_cores_busy"), "  server cores busy", "info", "{:.2f}", None),
    (result("handshakes", "lat_p50_ms"), "  handshake+request p50 ms", "lower", "{:.2f}", None),
    (result("handshakes", "tickets_per_handshake"), "  tickets/handshake", "info", "{:.2f}", None),
    (result("resumed", "ops_per_server_cpu_s"), "resumed handshakes per server CPU-s", "higher",
     "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x"), "resumed handshakes"),
    (result("resumed", "resumed_pct"), "  resumed %", "info", "{:.1f}", None),
    (result("resumed", "tickets_per_handshake"), "  tickets/handshake", "info", "{:.2f}", None),
    (result("requests", "ops_per_server_cpu_s"), "keep-alive requests per server CPU-s",
     "higher", "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x"), "keep-alive requests"),
    (result("requests", "ops_per_s"), "  requests/s (wall clock)", "info", "{:.0f}", None),
    (result("requests", "server_cores_busy"), "  server cores busy", "info", "{:.2f}", None),
    (result("latency", "lat_p50_ms"),
     title_with("latency", "offered_rate", "requests at a fixed {}/s: p50 ms"),
     "lower", "{:.3f}", ("ratio", "<=", 1.0, "<= nginx's", rate_reached),
     title_with("latency", "offered_rate", "requests at a fixed {}/s")),
    (result("latency", "lat_p99_ms"), "  p99 ms", "lower", "{:.3f}",
     ("ratio", "<=", 1.0, "<= nginx's", rate_reached)),
    (result("latency", "lat_p999_ms"), "  p99.9 ms", "lower", "{:.3f}", None),
    (result("latency", "ops_per_s"), "  achieved requests/s", "info", "{:.0f}", None),
    (result("bulk", "mb_per_server_cpu_s"), "bulk download MB per server CPU-s", "higher",
     "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x"), "bulk download"),
    (result("bulk", "mb_per_s"), "  MB/s (wall clock)", "info", "{:.0f}", None),
    (result("http", "ops_per_server_cpu_s"),
     "HTTP mode requests per server CPU-s (nginx http, HAProxy http; X-Forwarded-For, -Proto, "
     "-Client-Cert added by all three)", "higher", "{:.0f}", ("ratio", ">=", 1.2, ">= 1.2x"),
     "HTTP mode requests"),
    (result("http_bare", "ops_per_server_cpu_s"), "  the same, no header added by any", "info",
     "{:.0f}", None),
    (cpu_us_over("http_bare", "requests"),
     "  CPU µs per request that handling HTTP costs (no header added, minus the layer-4 keep-alive "
     "row: the same requests; nginx stream, HAProxy tcp there)", "lower", "{:.2f}", None),
    (cpu_us_over("http", "http_bare"), "  CPU µs per request that adding the three headers costs",
     "info", "{:.2f}", None),
    (result("idle", "pss_kib_per_conn"), title_with("idle", "requested", "idle mTLS connection, PSS KiB ({})"),
     "lower", "{:.1f}", ("abs", "<=", 12, "<= 12 KiB", unsound_guard("idle")),
     title_with("idle", "requested", "{} idle mTLS connections")),
    (result("idle", "kib_per_conn"), "  RSS KiB per connection", "lower", "{:.1f}", None),
    (result("idle", "retained_pct"), "  growth kept after closing them %", "info", "{:.0f}",
     None),
    (result("idle_many", "pss_kib_per_conn"),
     title_with("idle_many", "requested", "idle mTLS connection, PSS KiB ({})"), "lower", "{:.1f}",
     ("abs", "<=", 12, "<= 12 KiB", unsound_guard("idle_many")),
     title_with("idle_many", "requested", "{} idle mTLS connections")),
    (result("idle_many", "kib_per_conn"), "  RSS KiB per connection", "lower", "{:.1f}", None),
    (result("idle_many", "retained_pct"), "  growth kept after closing them %", "info", "{:.0f}",
     None),
    (result("pending_silent", "pss_kib_per_conn"),
     title_with("pending_silent", "requested", "silent socket (no ClientHello), PSS KiB ({})"), "lower",
     "{:.1f}", ("abs", "<=", 16, "<= 16 KiB"),
     title_with("pending_silent", "requested", "{} silent sockets (no ClientHello)")),
    (result("pending_silent", "retained_pct"), "  growth kept after closing them %", "info",
     "{:.0f}", ("abs", "<=", 25, "<= 25% (given back)")),
    (result("pending_half", "pss_kib_per_conn"),
     title_with("pending_half", "requested", "half a ClientHello, PSS KiB ({})"), "lower", "{:.1f}",
     ("abs", "<=", 16, "<= 16 KiB"),
     title_with("pending_half", "requested", "{} sockets with half a ClientHello")),
    (result("pending_half", "retained_pct"), "  growth kept after closing them %", "info",
     "{:.0f}", ("abs", "<=", 25, "<= 25% (given back)")),
    (access_log_cost("handshakes"),
     "access_log: true costs, layer 4: handshakes per CPU-s % (a line per connection)", "lower",
     "{:.1f}", ("abs", "<=", 5, "<= 5%", unsound_guard(*windows("access_log"))),
     "access_log: true costs, layer 4"),
    (access_log_cost("requests"),
     "  keep-alive requests per CPU-s % (a line per connection, ~32 a window: no verdict)",
     "info", "{:.1f}", None),
    (access_log_cost("requests", "access_log_http"),
     "access_log: true costs, HTTP mode: requests per CPU-s % (a line per request)", "lower",
     "{:.1f}", ("abs", "<=", 5, "<= 5%", unsound_guard(*windows("access_log_http")))),
    (workers_scaling("handshakes"),
     "workers 2 / 1: handshakes/s, neither pinned (see the note)", "higher", "{:.2f}",
     ("abs", ">=", 1.8, "~2x (>= 1.8)", workers_guard("handshakes")),
     "workers 2 / 1, handshakes"),
    (one_worker_busy("handshakes"), "  one worker's server cores busy", "info", "{:.2f}", None),
    (workers_scaling("requests"),
     "workers 2 / 1: requests/s, neither pinned (see the note)", "higher", "{:.2f}",
     ("abs", ">=", 1.8, "~2x (>= 1.8)", workers_guard("requests")),
     "workers 2 / 1, requests"),
    (one_worker_busy("requests"), "  one worker's server cores busy", "info", "{:.2f}", None),
    (result("reload", "resumed_pct_after_signal"),
     "reload, workers 2: resumed % after SIGHUP", "higher", "{:.1f}",
     ("abs", ">=", 95, ">= 95%", unsound_guard("reload")), "reload, workers 2"),
    (result("reload", "old_ticket_resumed_pct"), "  tickets from before SIGHUP accepted %",
     "higher", "{:.1f}", ("abs", ">=", 95, ">= 95%", unsound_guard("reload"))),
]

NOTES = [
    "Ratios are mtlsd's median over the other server's; > 1 on 'higher' rows and < 1 on "
    "'lower' rows favour mtlsd. Per server CPU-second figures are the ones to compare on a "
    "busy machine.",
    "One worker per server, pinned to core 0, the load generator and the upstream on the other "
    "cores (workloads other than workers2 and reload).",
    "workers 2 / 1: one worker and two of the same server, neither pinned, in adjacent windows "
    "of the same round (1, 2, 2, 1 workers), the load generator and the upstream on the same "
    "cores as they: what a second worker adds to the throughput on this machine. It reads n/a "
    "unless the one worker kept its cores >= 0.9 busy (else the load generator, not the server, "
    "set the pace) and invalid above 2. On 2 cores it cannot show 2x: the load generator, "
    "whose TLS work per handshake is about the server's, needs the cores too.",
    "access_log: the same mtlsd with access_log true and false, in adjacent windows (off, on, "
    "on, off). Layer 4 writes a line per connection: the handshakes row carries the target, the "
    "keep-alive row (32 lines a window) is information. HTTP mode writes a line per request.",
    "Memory: PSS from /proc/PID/smaps_rollup summed over the server's processes, growth per "
    "connection held open; 'kept after closing them' = growth still there after all are "
    "closed. An idle row whose server closed some connections before the sample is an error.",
    "Fixed-rate latency: every request has an intended start on a fixed schedule; latency is "
    "measured from it, so a stall delays and counts the requests queued behind it.",
]
