# shellcheck shell=bash
# bench/lib/workloads.sh — sourced by bench/run.sh: one function per workload.
#
# A workload `wl_NAME SERVER` sets the variant it needs (bench/lib/servers.sh; the driver resets
# it to the defaults before each call), starts SERVER, runs the load generator one or more times,
# and stops SERVER. `WL_SERVERS[NAME]` lists the servers it runs on (default: all three);
# `WORKLOADS` is the order of a round. To add a workload: a wl_ function, one WORKLOADS entry
# (and a WL_SERVERS entry when not all three), and rows in bench/report_rows.py; a workload of
# its own file goes in bench/lib/workload-NAME.sh (run.sh sources every such file after this one).
#
# Scale (set by run.sh): WARMUP HS_S REQ_S BULK_S LAT_S RELOAD_S HS_THREADS REQ_CONNS BULK_CONNS
# LAT_RATE LAT_CONNS IDLE_FEW IDLE_MANY PENDING_N SETTLE.

WORKLOADS=(handshakes resumed requests latency bulk http http_bare idle idle_many pending_silent
    pending_half access_log access_log_http workers2 reload)
# Not in a round, only named (--workloads, --instructions, --profile, ...): http_accesslog.
declare -A WL_SERVERS=(
    [access_log]="mtlsd"
    [access_log_http]="mtlsd"
    [http_accesslog]="mtlsd"
    # HAProxy reloads only in master-worker mode (-W, SIGUSR2), with new ticket keys unless
    # given a tls-ticket-keys file: not the same experiment; nginx's reload (SIGHUP) is.
    [reload]="mtlsd nginx"
)
wl_servers() { echo "${WL_SERVERS[$1]:-mtlsd nginx haproxy}"; }

# NAME MODE ARGS...: runs the load generator against the running server and appends its JSON
# line to $RESULTS, tagged with the round, the workload and the server's worker count. The load
# generator is pinned off the server's core when the server is pinned. LOADGEN_TIMEOUT: seconds
# before it is killed (default 300); LOADGEN_ARGS: more options for every run (--instructions).
LOADGEN_ARGS=()
loadgen() {
    local name=$1 mode=$2
    shift 2
    local out err=$T/loadgen-$name-$WORKLOAD-$mode.err
    set_pin "$([[ -n "$(server_cpus)" ]] && echo "$CLIENT_CPUS")"
    if ! out=$(timeout "${LOADGEN_TIMEOUT:-300}" "${PIN[@]}" "$LOADGEN_BIN" --mode "$mode" --port "$PROXY_PORT" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" \
        --server-pid "$SERVER_PID" --upstream-pid "$UP_PID" --label "$name" \
        --warmup "$WARMUP" "${LOADGEN_ARGS[@]}" "$@" 2>"$err"); then
        log "$name $WORKLOAD: loadgen failed: $(head -c 400 "$err")"
    fi
    LAST_RESULT=""
    if [[ -n "$out" ]]; then
        LAST_RESULT="{\"round\":$ROUND,\"workload\":\"$WORKLOAD\",\"workers\":$V_WORKERS,${out#\{}"
        echo "$LAST_RESULT" >>"$RESULTS"
    fi
    [[ -s "$err" ]] && log "$name $WORKLOAD: $(head -3 "$err" | tr '\n' ' ')"
    return 0
}

# A number field of the last loadgen result (LAST_RESULT), "" when it has none.
last_result_field() { # KEY
    [[ "$LAST_RESULT" =~ \"$1\":(-?[0-9.]+) ]] && echo "${BASH_REMATCH[1]}"
    return 0
}

# N REASON: the last N loadgen results (the last N lines of $RESULTS) cannot be trusted: each
# gets "invalid": REASON, which report.py lists under the table and shows as the verdict of the
# rows they feed (an error, never a PASS).
mark_invalid() {
    log "$WORKLOAD: result invalid: $2"
    python3 - "$RESULTS" "$1" "$2" <<'EOF2'
import json, sys
path, n, reason = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, encoding="utf-8") as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
for i in range(max(0, len(lines) - n), len(lines)):
    r = json.loads(lines[i])
    r["invalid"] = f"{r['invalid']}; {reason}" if r.get("invalid") else reason
    lines[i] = json.dumps(r, separators=(",", ":"))
with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
EOF2
    LAST_RESULT=$(tail -n 1 "$RESULTS")
}

# --- throughput, one worker pinned, no tickets (issue 13's table) -----------------------------
wl_handshakes() { # full mTLS handshakes, each with one small request and a close
    server_up "$1"
    loadgen "$1" handshakes --duration "$HS_S" --threads "$HS_THREADS"
    server_down
}
wl_resumed() { # the same with TLS 1.3 resumption: one ticket per handshake on every server
    V_TICKETS=1
    server_up "$1"
    loadgen "$1" resumed --duration "$HS_S" --threads "$HS_THREADS"
    server_down
}
wl_requests() { # 64-byte-ish keep-alive request/response, as fast as it goes
    server_up "$1"
    loadgen "$1" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    server_down
}
wl_latency() { # the same at a fixed rate: p50/p99 from the intended send time
    server_up "$1"
    loadgen "$1" latency --duration "$LAT_S" --connections "$LAT_CONNS" --rate "$LAT_RATE"
    server_down
}
wl_bulk() { # large downloads on keep-alive connections
    server_up "$1"
    loadgen "$1" bulk --duration "$BULK_S" --connections "$BULK_CONNS"
    server_down
}
wl_http() { # HTTP/1.1 keep-alive through an HTTP-aware proxy: mtlsd `http:`, nginx http, HAProxy
    # http, each adding X-Forwarded-For, -Proto and -Client-Cert (V_IDENTITY, servers.sh)
    V_HTTP=1
    server_up "$1"
    loadgen "$1" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    server_down
}
wl_http_bare() { # the same with no proxy adding a header
    V_HTTP=1 V_IDENTITY=0
    server_up "$1"
    loadgen "$1" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    server_down
}
wl_http_accesslog() { # `http` with mtlsd's shipped access_log: true (one line per request). Not
    # in a round (access_log_http times the log's cost): for --instructions and the like, whose
    # count per request beside `http`'s is what the line costs (bench/README.md).
    V_HTTP=1 V_ACCESS_LOG=1
    rm -f "$T/mtlsd/access.log"
    server_up "$1"
    loadgen "$1" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    server_down
    [[ -n "$LAST_RESULT" ]] && check_access_lines 1 "$(last_result_field ops)"
    rm -f "$T/mtlsd/access.log"
}

# --- memory -----------------------------------------------------------------------------------
# Session tickets per handshake in the idle and pending workloads, and in mtlsd_idle_floor,
# whose table is set beside their rows.
IDLE_TICKETS=0
idle_run() { # NAME MODE COUNT ARGS...: a fresh server, COUNT connections held, memory sampled
    local name=$1 mode=$2 count=$3
    shift 3
    V_TICKETS=$IDLE_TICKETS
    server_up "$name"
    # Opening 8,000 mTLS connections takes ~10 s on a quiet machine, minutes on a busy one.
    LOADGEN_TIMEOUT=1200 loadgen "$name" "$mode" --connections "$count" --threads "$HS_THREADS" --settle "$SETTLE" "$@"
    server_down
}
wl_idle() { idle_run "$1" idle "$IDLE_FEW"; }        # full mTLS + one request, then idle
wl_idle_many() { idle_run "$1" idle "$IDLE_MANY"; }
wl_pending_silent() { idle_run "$1" pending "$PENDING_N" --pending silent; }  # connect, nothing
wl_pending_half() { idle_run "$1" pending "$PENDING_N" --pending half; }      # half a ClientHello

# OpenSSL's own cost per idle connection, without any proxy (bench/idle_floor.cpp), once per run
# at the connection counts and the tickets (IDLE_TICKETS) of the idle workloads it has (none:
# nothing); its table goes to FILE, which report.py --floor puts next to the idle rows.
idle_floor() { # FILE
    local counts=() wl list
    for wl in "${WORKLOADS[@]}"; do
        [[ $wl == idle ]] && counts+=("$IDLE_FEW")
        [[ $wl == idle_many ]] && counts+=("$IDLE_MANY")
    done
    ((${#counts[@]} > 0)) || return 0
    list=$(IFS=,; echo "${counts[*]}")
    log "OpenSSL's own floor per idle connection (mtlsd_idle_floor): $list connections"
    timeout 1200 "$IDLE_FLOOR_BIN" --pki "$PKI" --connections "$list" --tickets "$IDLE_TICKETS" \
        >"$1" 2>"$T/idle_floor.err" ||
        log "mtlsd_idle_floor failed: $(head -c 400 "$T/idle_floor.err")"
    return 0
}

# --- the shipped defaults ---------------------------------------------------------------------
# N WANT: after an `access_log: true` run of mtlsd has stopped (its log written out), its last N
# results are invalid unless the access log has at least WANT lines (one per connection at
# layer 4, one per request in HTTP mode), and at least one.
check_access_lines() {
    local lines
    lines=$(wc -l <"$T/mtlsd/access.log" 2>/dev/null || echo 0)
    if ((lines == 0)); then
        mark_invalid "$1" "no access-log line"
    elif ((lines < $2)); then
        mark_invalid "$1" "$lines access-log lines for $2 operations"
    fi
    return 0
}

# SERVER PREFIX HTTP MODE...: mtlsd's shipped `access_log: true` (to a file) against the same
# mtlsd without it, in adjacent windows ordered off, on, on, off: on this shared VM the
# throughput drifts by up to +-30% over minutes, which swamped the ~1% the log costs when the
# "off" figure came from a workload run minutes earlier. The mirrored order cancels a steady
# drift; report_rows.py compares the two "on" windows with the two "off" ones (ops per
# CPU-second). Each window is half the mode's usual length; HTTP 1 = mtlsd's `http:` mode.
access_log_windows() {
    local name=$1 prefix=$2 http=$3 step state mode results want ops
    shift 3
    for step in off:1 on:1 on:2 off:2; do
        state=${step%:*} results=0 want=1
        V_HTTP=$http V_ACCESS_LOG=$([[ $state == on ]] && echo 1 || echo 0)
        rm -f "$T/mtlsd/access.log"
        server_up "$name"
        for mode in "$@"; do
            WORKLOAD=${prefix}_${state}_${step#*:} half_window "$name" "$mode"
            [[ -n "$LAST_RESULT" ]] || continue
            results=$((results + 1))
            # A line per handshake (each its own connection), and per request in HTTP mode;
            # layer-4 keep-alive requests write one per connection, a few.
            ops=$(last_result_field ops)
            [[ $mode == handshakes || $http == 1 ]] && want=$((want + ${ops:-0}))
        done
        server_down
        [[ $state == on ]] &&
            WORKLOAD=${prefix}_${state}_${step#*:} check_access_lines "$results" "$want"
        rm -f "$T/mtlsd/access.log"
    done
}
half_window() { # SERVER MODE: the workload MODE's load (handshakes or requests), half as long
    if [[ $2 == handshakes ]]; then
        loadgen "$1" handshakes --duration "$(awk "BEGIN{print $HS_S / 2}")" --threads "$HS_THREADS"
    else
        loadgen "$1" requests --duration "$(awk "BEGIN{print $REQ_S / 2}")" --connections "$REQ_CONNS"
    fi
}
# Layer 4 (mtlsd server mode): handshakes, each one access line, and keep-alive requests, whose
# window writes a line per connection only (32 in all): information, not the per-request cost.
wl_access_log() { access_log_windows "$1" access_log 0 handshakes requests; }
# HTTP mode (`http: {}`, as the `http` workload): one access line per request.
wl_access_log_http() { access_log_windows "$1" access_log_http 1 requests; }

# One worker against two, in adjacent windows of the same round ordered 1, 2, 2, 1 (the
# mirrored order cancels a steady drift, as in access_log), neither pinned: the one-worker
# baseline runs on the same cores as the two workers, beside the load generator, which is not
# pinned either. Dividing by the pinned handshakes/requests rows instead measured the load
# generator getting a second core (review: unpinning alone 1.35-1.57x, the second worker
# 1.07-1.11x). report_rows.py reads n/a unless the one worker was near saturation.
wl_workers2() {
    local step
    for step in 1:1 2:1 2:2 1:2; do
        V_WORKERS=${step%:*} V_PIN=0
        server_up "$1"
        WORKLOAD=workers2_w${V_WORKERS}_${step#*:} half_window "$1" handshakes
        WORKLOAD=workers2_w${V_WORKERS}_${step#*:} half_window "$1" requests
        server_down
    done
}

# NAME BEFORE: after the reload workload's window, the last result is invalid unless the server
# reloaded. mtlsd logs (at level info) a "reloaded" line with result=success for SIGHUP, and an
# error for a reload that failed, which keeps the old configuration and so its tickets too
# (review: at level warn a good SIGHUP wrote nothing, and a failing one passed as well). nginx
# starts new workers for a reload it accepts: BEFORE is its workers before the window.
check_reloaded() {
    local name=$1 before=$2 after pid failed
    if [[ "$(last_result_field signalled)" != 1 ]]; then
        mark_invalid 1 "no SIGHUP sent"
    elif [[ $name == mtlsd ]]; then
        grep -qE ' info reloaded .*trigger=SIGHUP .*result=success' "$T/mtlsd/stderr.log" && return 0
        # What it logged instead, if anything: the message, without its fields.
        failed=$(grep -m1 -oE ' (reload failed|reloaded, but)[^=]*' "$T/mtlsd/stderr.log" |
            sed -E 's/^ //; s/ [a-z_]+$//' || true)
        mark_invalid 1 "no successful reload logged${failed:+ ($failed)}"
    elif [[ $name == nginx ]]; then
        after=$(pgrep -P "$SERVER_PID" | paste -sd' ' || true)
        for pid in $after; do
            [[ " $before " == *" $pid "* ]] || return 0   # a new worker: nginx reloaded
        done
        log "nginx workers before the window: $before; after it: $after"
        mark_invalid 1 "nginx started no new worker"
    fi
    return 0
}
# Two workers, tickets on, SIGHUP a third into the window: do tickets survive it? mtlsd at log
# level info, for its "reloaded" line.
wl_reload() {
    local before
    V_WORKERS=2 V_TICKETS=1 V_LOG_LEVEL=info
    server_up "$1"
    before=$(pgrep -P "$SERVER_PID" | paste -sd' ' || true)
    loadgen "$1" resumed --duration "$RELOAD_S" --threads "$HS_THREADS" \
        --hup-pid "$SERVER_PID" --hup-at "$(awk "BEGIN{print $RELOAD_S / 3}")" --hup-wait 1.5
    [[ -z "$LAST_RESULT" ]] || check_reloaded "$1" "$before"
    server_down
}
