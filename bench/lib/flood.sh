# shellcheck shell=bash
# bench/lib/flood.sh — sourced by bench/run.sh: --flood (issue 17): one source floods the server,
# which caps connections per source, while three others make full mTLS handshakes at a steady
# rate. mtlsd and nginx (stream) only: bench/README.md says why not HAProxy.

# The window of each of the three phases; the others' total rate (split over OTHER_SOURCES
# sources, one thread each); the per-source cap the servers enforce.
if [[ $QUICK == 1 ]]; then FLOOD_S=3; else FLOOD_S=6; fi
OTHER_SOURCES=3; OTHERS_RATE=60; FLOOD_THREADS=4; PER_SOURCE=5
FLOOD_SRC=198.51.100.66
OTHER_SRCS=203.0.113.1,203.0.113.2,203.0.113.3

# nginx's stream module terminates TLS (a layer-4 proxy like mtlsd), reads the PROXY header
# first and applies limit_conn, keyed by the header's address, in its preaccess phase, which
# runs before the ssl phase: a refused connection costs no TLS work, as with mtlsd.
start_nginx_flood() {
    local d=$T/nginx
    rm -rf "$d"
    mkdir -p "$d/tmp"
    # mtlsd logs a refusal only as an access-log line: nginx logs its refusals (to the error
    # log) only with --access-log too, else below the error log's level.
    local refusal_log="limit_conn_log_level info;"
    [[ $V_ACCESS_LOG == 1 ]] && refusal_log="limit_conn_log_level warn;"
    {
        nginx_stream_load
        echo "worker_processes $V_WORKERS;"
        nginx_common "$d"
        cat <<EOF
stream {
  limit_conn_zone \$proxy_protocol_addr zone=per_source:10m;
  server {
    listen 127.0.0.1:$PROXY_PORT ssl proxy_protocol;
    proxy_protocol_timeout 30s;
    limit_conn per_source $PER_SOURCE;
    $refusal_log
$(nginx_tls_lines)
    ssl_handshake_timeout 30s;
    proxy_pass 127.0.0.1:$UP_PORT;
  }
}
EOF
    } >"$d/nginx.conf"
    nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "nginx (stream) config rejected"
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
}

# One loadgen run of a phase (NAME SCENARIO MODE ARGS...), one JSON line into $RESULTS.
flood_loadgen() {
    local name=$1 scenario=$2 mode=$3
    shift 3
    local out err=$T/loadgen-$name-$scenario.err
    if ! out=$(timeout 60 "$LOADGEN_BIN" --mode "$mode" --port "$PROXY_PORT" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" \
        --server-pid "$SERVER_PID" --upstream-pid "$UP_PID" --label "$name" \
        --scenario "$scenario" --warmup "$WARMUP" "$@" 2>"$err"); then
        log "$name $scenario: loadgen failed: $(head -c 400 "$err")"
    fi
    [[ -n "$out" ]] && echo "$out" >>"$RESULTS"
    [[ -s "$err" ]] && log "$name $scenario: $(head -3 "$err" | tr '\n' ' ')"
    return 0
}

# The three phases against the running server. The flooder holds its PER_SOURCE places with
# silent connections (header sent, no ClientHello), so every further connection of its source
# is over the cap; a connection not refused within 2 s is counted as an error.
run_flood() { # NAME
    local name=$1
    local others=(--proxy-src "$OTHER_SRCS" --threads "$OTHER_SOURCES" --rate "$OTHERS_RATE")
    local flood=(--proxy-src "$FLOOD_SRC" --threads "$FLOOD_THREADS" --rate "$FLOOD_RATE"
        --hold "$PER_SOURCE" --timeout 2 --settle 0.5)
    log "$name: others alone (${FLOOD_S}s, $OTHER_SOURCES sources, $OTHERS_RATE handshakes/s in all)"
    flood_loadgen "$name" others_alone handshakes --duration "$FLOOD_S" "${others[@]}"
    log "$name: flood alone (${FLOOD_S}s, one source, $FLOOD_RATE connections/s offered)"
    flood_loadgen "$name" flood_alone flood --duration "$FLOOD_S" "${flood[@]}"
    # Both at once: the others' window opens after the flooder's holds and warm-up (0.5 s
    # settle + its warm-up) and closes before the flood's window does.
    log "$name: flood and others together (${FLOOD_S}s)"
    flood_loadgen "$name" flood_with_others flood --duration "$(awk "BEGIN{print $FLOOD_S + 1.5}")" \
        "${flood[@]}" &
    local flood_pid=$!
    flood_loadgen "$name" others_flooded handshakes --duration "$FLOOD_S" \
        --warmup "$(awk "BEGIN{print $WARMUP + 1}")" "${others[@]}"
    wait "$flood_pid"
}

# The whole --flood run: every server in SERVERS but HAProxy, as before issue 13 (all workers,
# not pinned).
flood_main() {
    local name
    V_FLOOD=1 V_WORKERS=$NPROC V_TICKETS=$TICKETS V_ACCESS_LOG=$ACCESS_LOG
    for name in "${SERVERS[@]}"; do
        if [[ $name == haproxy ]]; then
            log "haproxy: skipped with --flood: its tcp-request connection rules see the socket's"
            log "haproxy: address, not the PROXY header's; rules that see the header's run after"
            log "haproxy: the TLS handshake (bench/README.md)"
            continue
        fi
        log "$name: start (PROXY v1 required, at most $PER_SOURCE connections per source)"
        if [[ $name == nginx ]]; then start_nginx_flood; else start_mtlsd; fi
        PIDS+=("$SERVER_PID")
        check_proxy "$name"
        run_flood "$name"
        server_down
    done
}
