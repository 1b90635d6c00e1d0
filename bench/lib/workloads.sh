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
    pending_half access_log workers2 reload)
declare -A WL_SERVERS=(
    [access_log]="mtlsd"
    # HAProxy reloads only in master-worker mode (-W, SIGUSR2), with new ticket keys unless
    # given a tls-ticket-keys file: not the same experiment; nginx's reload (SIGHUP) is.
    [reload]="mtlsd nginx"
)
wl_servers() { echo "${WL_SERVERS[$1]:-mtlsd nginx haproxy}"; }

# NAME MODE ARGS...: runs the load generator against the running server and appends its JSON
# line to $RESULTS, tagged with the round, the workload and the server's worker count. The load
# generator is pinned off the server's core when the server is pinned. LOADGEN_TIMEOUT: seconds
# before it is killed (default 300).
loadgen() {
    local name=$1 mode=$2
    shift 2
    local out err=$T/loadgen-$name-$WORKLOAD-$mode.err
    set_pin "$([[ -n "$(server_cpus)" ]] && echo "$CLIENT_CPUS")"
    if ! out=$(timeout "${LOADGEN_TIMEOUT:-300}" "${PIN[@]}" "$LOADGEN_BIN" --mode "$mode" --port "$PROXY_PORT" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" \
        --server-pid "$SERVER_PID" --upstream-pid "$UP_PID" --label "$name" \
        --warmup "$WARMUP" "$@" 2>"$err"); then
        log "$name $WORKLOAD: loadgen failed: $(head -c 400 "$err")"
    fi
    [[ -n "$out" ]] &&
        echo "{\"round\":$ROUND,\"workload\":\"$WORKLOAD\",\"workers\":$V_WORKERS,${out#\{}" >>"$RESULTS"
    [[ -s "$err" ]] && log "$name $WORKLOAD: $(head -3 "$err" | tr '\n' ' ')"
    return 0
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

# --- memory -----------------------------------------------------------------------------------
idle_run() { # NAME MODE COUNT ARGS...: a fresh server, COUNT connections held, memory sampled
    local name=$1 mode=$2 count=$3
    shift 3
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
# at the connection counts of the idle workloads it has (none: nothing); its table goes to FILE,
# which report.py --floor puts next to the idle rows.
idle_floor() { # FILE
    local counts=() wl list
    for wl in "${WORKLOADS[@]}"; do
        [[ $wl == idle ]] && counts+=("$IDLE_FEW")
        [[ $wl == idle_many ]] && counts+=("$IDLE_MANY")
    done
    ((${#counts[@]} > 0)) || return 0
    list=$(IFS=,; echo "${counts[*]}")
    log "OpenSSL's own floor per idle connection (mtlsd_idle_floor): $list connections"
    timeout 1200 "$IDLE_FLOOR_BIN" --pki "$PKI" --connections "$list" >"$1" 2>"$T/idle_floor.err" ||
        log "mtlsd_idle_floor failed: $(head -c 400 "$T/idle_floor.err")"
    return 0
}

# --- the shipped defaults ---------------------------------------------------------------------
wl_access_log() { # mtlsd's shipped `access_log: true` (to a file) against the same mtlsd without
    # it, in adjacent windows ordered off, on, on, off: on this shared VM the throughput drifts by
    # up to +-30% over minutes, which swamped the ~1% the log costs when the "off" figure came
    # from the handshakes workload run minutes earlier. The mirrored order cancels a steady drift;
    # report_rows.py compares the two "on" windows with the two "off" ones (ops per CPU-second).
    local hs_s req_s step state lines
    hs_s=$(awk "BEGIN{print $HS_S / 2}") req_s=$(awk "BEGIN{print $REQ_S / 2}")
    for step in off:1 on:1 on:2 off:2; do
        state=${step%:*}
        V_ACCESS_LOG=$([[ $state == on ]] && echo 1 || echo 0)
        server_up "$1"
        WORKLOAD=access_log_${state}_${step#*:} loadgen "$1" handshakes --duration "$hs_s" --threads "$HS_THREADS"
        WORKLOAD=access_log_${state}_${step#*:} loadgen "$1" requests --duration "$req_s" --connections "$REQ_CONNS"
        if [[ $state == on ]]; then
            lines=$(wc -l <"$T/mtlsd/access.log" 2>/dev/null || echo 0)
            ((lines > 0)) || log "WARNING: access_log on, but $T/mtlsd/access.log has no line"
        fi
        server_down
        rm -f "$T/mtlsd/access.log"
    done
}
wl_workers2() { # two workers, not pinned: the load generator shares both cores with them
    V_WORKERS=2
    server_up "$1"
    loadgen "$1" handshakes --duration "$HS_S" --threads "$HS_THREADS"
    loadgen "$1" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    server_down
}
wl_reload() { # two workers, tickets on, SIGHUP a third into the window: do tickets survive it?
    V_WORKERS=2 V_TICKETS=1
    server_up "$1"
    loadgen "$1" resumed --duration "$RELOAD_S" --threads "$HS_THREADS" \
        --hup-pid "$SERVER_PID" --hup-at "$(awk "BEGIN{print $RELOAD_S / 3}")" --hup-wait 1.5
    server_down
}
