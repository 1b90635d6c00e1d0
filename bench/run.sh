#!/usr/bin/env bash
# bench/run.sh — mtlsd against nginx and HAProxy: same machine, same PKI, same upstream, same
# client. Prints a table of absolute numbers and the ratios mtlsd/nginx and mtlsd/haproxy.
# See bench/README.md for what each number means and how to read it.
#
#   bench/run.sh [--quick] [--flood] [--flood-rate N] [--tickets 0|1] [--access-log] [--only LIST]
#                [--out FILE] [--keep]
#
#   --quick        small scale, about 40 s in all (default: about 2.5 minutes)
#   --flood        instead of the four modes: one source (named by PROXY v1 headers) floods the
#                  server, which caps connections per source, while three others make full mTLS
#                  handshakes at a steady rate; the others alone, the flood alone, then both.
#                  mtlsd and nginx (stream); HAProxy cannot refuse by the PROXY address before
#                  the TLS handshake, so it is skipped (bench/README.md). About 30 s (--quick)
#                  or 50 s.
#   --flood-rate N flood connections offered per second (default 3000; 0 = as fast as it can)
#   --tickets N    TLS 1.3 session tickets each server issues per full handshake (default 0;
#                  OpenSSL's own default is 2). The table's "tickets/handshake" row shows what
#                  each server really sent.
#   --access-log   mtlsd and nginx write one access-log line per connection (to a file);
#                  HAProxy has no log target here. Default: no access logs anywhere.
#   --only LIST    comma-separated subset of mtlsd,nginx,haproxy
#   --out FILE     also write the raw results (one JSON object per line) to FILE
#   --keep         keep the temporary directory (configs, logs, PKI) and print its path
#   --h2           instead: HTTP/2 by h2load through mtlsd's http: mode and nginx (bench/h2.sh)
#
# Environment: MTLSD_BIN, LOADGEN_BIN override the binaries (otherwise they are built).
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
TICKETS=0
ACCESS_LOG=0
ONLY="mtlsd,nginx,haproxy"
OUT_FILE=""
KEEP=0
FLOOD=0
FLOOD_RATE=3000
H2=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --tickets) TICKETS=${2:?}; shift ;;
        --access-log) ACCESS_LOG=1 ;;
        --only) ONLY=${2:?}; shift ;;
        --out) OUT_FILE=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        --flood) FLOOD=1 ;;
        --flood-rate) FLOOD_RATE=${2:?}; shift ;;
        --h2) H2=1 ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$TICKETS" == 0 || "$TICKETS" == 1 ]] || { echo "run.sh: --tickets must be 0 or 1" >&2; exit 2; }
[[ $H2 == 1 ]] && exec "$ROOT/bench/h2.sh" --only "$ONLY" $([[ $QUICK == 1 ]] && echo --quick) \
    $([[ $KEEP == 1 ]] && echo --keep) ${OUT_FILE:+--out "$OUT_FILE"}

START=$(date +%s)
NPROC=$(nproc)
if [[ $QUICK == 1 ]]; then
    WARMUP=0.5; HS_S=2; REQ_S=2; BULK_S=1.5; IDLE_CONNS=150; SETTLE=0.3
    HS_THREADS=4; REQ_CONNS=16; BULK_CONNS=2; LARGE_MIB=8
else
    WARMUP=1; HS_S=10; REQ_S=10; BULK_S=6; IDLE_CONNS=1000; SETTLE=1
    HS_THREADS=4; REQ_CONNS=32; BULK_CONNS=2; LARGE_MIB=32
fi
# --flood: the window of each of its three phases; the others' total rate (split over
# OTHER_SOURCES sources, one thread each); the per-source cap the servers enforce.
if [[ $QUICK == 1 ]]; then FLOOD_S=3; else FLOOD_S=6; fi
OTHER_SOURCES=3; OTHERS_RATE=60; FLOOD_THREADS=4; PER_SOURCE=5
FLOOD_SRC=198.51.100.66
OTHER_SRCS=203.0.113.1,203.0.113.2,203.0.113.3
if [[ $FLOOD == 1 ]]; then
    LARGE_MIB=1   # only /small is fetched
    [[ "$ONLY" == "mtlsd,nginx,haproxy" ]] && ONLY="mtlsd,nginx"
fi

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in openssl nginx haproxy curl python3 cmake; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done

# --- binaries ---------------------------------------------------------------------------------
build_log=$(mktemp /tmp/mtlsd-bench-build.XXXXXX)
if [[ -z "${LOADGEN_BIN:-}" ]]; then
    LOADGEN_BIN="$ROOT/build/release/bench/mtlsd_loadgen"
    log "building mtlsd_loadgen (release preset, MTLSD_BUILD_BENCH=ON)"
    # Configure only when the option is not on yet (a reconfigure costs seconds).
    if ! grep -qs '^MTLSD_BUILD_BENCH:BOOL=ON' "$ROOT/build/release/CMakeCache.txt"; then
        (cd "$ROOT" && cmake --preset release -DMTLSD_BUILD_BENCH=ON >"$build_log" 2>&1) ||
            { cat "$build_log" >&2; die "cannot configure the release preset"; }
    fi
    (cd "$ROOT" && cmake --build --preset release -j2 --target mtlsd_loadgen >>"$build_log" 2>&1) ||
        { cat "$build_log" >&2; die "cannot build mtlsd_loadgen"; }
fi
if [[ -z "${MTLSD_BIN:-}" ]]; then
    MTLSD_BIN="$ROOT/build/release/mtlsd"
    if [[ ! -x "$MTLSD_BIN" && -x "$ROOT/build/bench-mtlsd/mtlsd" ]]; then
        log "WARNING: no build/release/mtlsd; using build/bench-mtlsd/mtlsd (made when the release"
        log "WARNING: preset build failed; rebuilt incrementally, delete it to retry the preset)"
        (cd "$ROOT" && cmake --build build/bench-mtlsd -j2 --target mtlsd >"$build_log" 2>&1) ||
            { tail -30 "$build_log" >&2; die "cannot build mtlsd"; }
        MTLSD_BIN="$ROOT/build/bench-mtlsd/mtlsd"
    elif [[ ! -x "$MTLSD_BIN" ]]; then
        log "building mtlsd (release preset)"
        if ! (cd "$ROOT" && cmake --preset release >"$build_log" 2>&1 &&
                cmake --build --preset release -j2 --target mtlsd >>"$build_log" 2>&1); then
            # Same compiler flags (RelWithDebInfo: -O2 -g -DNDEBUG), only without -Werror, so
            # the code generated is identical; say so loudly.
            grep -m3 'error:' "$build_log" >&2 || true
            log "WARNING: the release preset build of mtlsd failed (above); building the same"
            log "WARNING: sources with the same flags minus -Werror in build/bench-mtlsd"
            (cd "$ROOT" && cmake -S . -B build/bench-mtlsd -G Ninja \
                -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMTLSD_WERROR=OFF -DMTLSD_BUILD_TESTS=OFF \
                >"$build_log" 2>&1 &&
                cmake --build build/bench-mtlsd -j2 --target mtlsd >>"$build_log" 2>&1) ||
                { tail -30 "$build_log" >&2; die "cannot build mtlsd"; }
            MTLSD_BIN="$ROOT/build/bench-mtlsd/mtlsd"
        fi
    fi
fi
rm -f "$build_log"
[[ -x "$MTLSD_BIN" ]] || die "no mtlsd binary at $MTLSD_BIN"
[[ -x "$LOADGEN_BIN" ]] || die "no loadgen binary at $LOADGEN_BIN"
log "mtlsd: $MTLSD_BIN ($(date -r "$MTLSD_BIN" '+built %F %T')); builds took $(($(date +%s) - START)) s"
START=$(date +%s)   # the time budget (--quick: 40 s) covers what follows, not the builds

# --- temporary directory, process bookkeeping, cleanup ---------------------------------------
T=$(mktemp -d /tmp/mtlsd-bench.XXXXXX)
PIDS=()
stop_pid() { # PID: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
forget_pid() { # PID: never signal a reaped (and maybe reused) PID again
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $KEEP == 1 ]]; then log "kept $T"; else rm -rf -- "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "machine: $NPROC cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(openssl version)"

# --- PKI (the very one the tests use) ---------------------------------------------------------
"$ROOT/scripts/gen-pki.sh" "$T/pki" >/dev/null
PKI=$T/pki

# --- free loopback ports ----------------------------------------------------------------------
read -r UP_PORT PROXY_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root;"   # workers must read files in the 0700 temp dir

nginx_common() { # DIR: the lines every nginx here shares
    cat <<EOF
$USER_LINE
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
EOF
}
nginx_temp_paths() { # DIR
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $1/tmp/$d;"; done
}

# --- the upstream: nginx serving a small and a large static file ------------------------------
mkdir -p "$T/upstream/www" "$T/upstream/tmp"
printf 'hello from the upstream, %s\n' "$(printf 'x%.0s' {1..70})" >"$T/upstream/www/small"
head -c $((LARGE_MIB * 1024 * 1024)) /dev/urandom >"$T/upstream/www/large"
{
    echo "worker_processes 1;"
    nginx_common "$T/upstream"
    cat <<EOF
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  default_type application/octet-stream;
$(nginx_temp_paths "$T/upstream")
  server {
    listen 127.0.0.1:$UP_PORT;
    root $T/upstream/www;
  }
}
EOF
} >"$T/upstream/nginx.conf"
nginx -t -q -p "$T/upstream" -c "$T/upstream/nginx.conf" -e "$T/upstream/error.log" ||
    die "upstream nginx config rejected"
nginx -p "$T/upstream" -c "$T/upstream/nginx.conf" -e "$T/upstream/error.log" -g 'daemon off;' \
    >"$T/upstream/stdout.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
for ((i = 0; i < 50; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$UP_PORT/small" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$UP_PORT/small" || die "upstream nginx did not start"

# --- the three proxies ------------------------------------------------------------------------
start_mtlsd() {
    local d=$T/mtlsd
    mkdir -p "$d"
    local resumption=false
    [[ $TICKETS == 1 ]] && resumption=true
    local access=false
    [[ $ACCESS_LOG == 1 ]] && access=true
    local flood_cfg=""
    if [[ $FLOOD == 1 ]]; then
        # Every connection begins with a PROXY v1 header; its source is what the per-source
        # cap counts. A long handshake deadline keeps the flooder's held places held.
        flood_cfg="    accept_proxy_protocol: {versions: [v1]}
    limits: {max_connections_per_source: $PER_SOURCE}
    timeouts: {handshake: 30s}"
    fi
    cat >"$d/mtlsd.yaml" <<EOF
admin: {address: ""}
log: {level: warn, format: text, access_log: $access}
workers: $NPROC
reload: {watch: false}
shutdown: {drain_timeout: 1s}
listeners:
  - name: bench
    mode: server
    listen: 127.0.0.1:$PROXY_PORT
    upstream: 127.0.0.1:$UP_PORT
    max_connections: 100000
$flood_cfg
    tls:
      cert: $PKI/server.crt
      key: $PKI/server.key
      min_version: "1.3"
      session_resumption: $resumption
    client_auth:
      mode: require
      ca: [$PKI/ca.crt]
EOF
    "$MTLSD_BIN" check --config "$d/mtlsd.yaml" >"$d/check.log" 2>&1 ||
        { cat "$d/check.log" >&2; die "mtlsd check failed"; }
    "$MTLSD_BIN" run --config "$d/mtlsd.yaml" >"$d/stdout.log" 2>"$d/stderr.log" &
    SERVER_PID=$!
}

start_nginx() {
    local d=$T/nginx
    mkdir -p "$d/tmp"
    local access="access_log off;"
    [[ $ACCESS_LOG == 1 ]] && access="access_log $d/access.log;"
    local tickets="ssl_session_tickets off;"
    [[ $TICKETS == 1 ]] && tickets="ssl_session_tickets on;"
    {
        echo "worker_processes $NPROC;"
        nginx_common "$d"
        cat <<EOF
http {
  $access
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
$(nginx_temp_paths "$d")
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:$PROXY_PORT ssl;
    ssl_certificate $PKI/server.crt;
    ssl_certificate_key $PKI/server.key;
    ssl_client_certificate $PKI/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 4;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    $tickets
    ssl_conf_command NumTickets $TICKETS;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
    } >"$d/nginx.conf"
    nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "nginx config rejected"
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
}

# --flood: nginx's stream module terminates TLS (a layer-4 proxy like mtlsd), reads the PROXY
# header first and applies limit_conn, keyed by the header's address, in its preaccess phase,
# which runs before the ssl phase: a refused connection costs no TLS work, as with mtlsd.
NGINX_STREAM_MODULE=""
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
    [[ -f "$m" ]] && { NGINX_STREAM_MODULE=$m; break; }
done
start_nginx_flood() {
    local d=$T/nginx
    mkdir -p "$d/tmp"
    local load=""
    if nginx -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
        [[ -n "$NGINX_STREAM_MODULE" ]] ||
            die "nginx's stream module is not installed (apt-get install libnginx-mod-stream)"
        load="load_module $NGINX_STREAM_MODULE;"
    elif ! nginx -V 2>&1 | grep -q -- '--with-stream'; then
        die "this nginx has no stream module"
    fi
    local tickets="ssl_session_tickets off;"
    [[ $TICKETS == 1 ]] && tickets="ssl_session_tickets on;"
    # mtlsd logs a refusal only as an access-log line: nginx logs its refusals (to the error
    # log) only with --access-log too, else below the error log's level.
    local refusal_log="limit_conn_log_level info;"
    [[ $ACCESS_LOG == 1 ]] && refusal_log="limit_conn_log_level warn;"
    {
        echo "$load"
        echo "worker_processes $NPROC;"
        nginx_common "$d"
        cat <<EOF
stream {
  limit_conn_zone \$proxy_protocol_addr zone=per_source:10m;
  server {
    listen 127.0.0.1:$PROXY_PORT ssl proxy_protocol;
    proxy_protocol_timeout 30s;
    limit_conn per_source $PER_SOURCE;
    $refusal_log
    ssl_certificate $PKI/server.crt;
    ssl_certificate_key $PKI/server.key;
    ssl_client_certificate $PKI/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 4;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    $tickets
    ssl_conf_command NumTickets $TICKETS;
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

start_haproxy() {
    local d=$T/haproxy
    mkdir -p "$d"
    cat "$PKI/server.crt" "$PKI/server.key" >"$d/server.pem"
    local global_tls="" bind_tls=""
    if [[ $TICKETS == 0 ]]; then
        global_tls="tune.ssl.cachesize 0"
        bind_tls="no-tls-tickets"
    fi
    # HAProxy 2.6 has no setting for the number of TLS 1.3 tickets (even with the two lines
    # above it sends OpenSSL's default two); OpenSSL's system_default section, which applies
    # to every SSL_CTX it creates, does it.
    cat >"$d/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
NumTickets = $TICKETS
EOF
    cat >"$d/haproxy.cfg" <<EOF
global
  nbthread $NPROC
  maxconn $(( ($(ulimit -n) - 100) / 2 ))
  $global_tls
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend fe
  bind 127.0.0.1:$PROXY_PORT ssl crt $d/server.pem ca-file $PKI/ca.crt verify required ssl-min-ver TLSv1.3 $bind_tls
  default_backend be
backend be
  server up 127.0.0.1:$UP_PORT
EOF
    OPENSSL_CONF=$d/openssl.cnf haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy config rejected"
    OPENSSL_CONF=$d/openssl.cnf haproxy -db -f "$d/haproxy.cfg" >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
}

CURL_TLS=(--cacert "$PKI/ca.crt" --resolve "localhost:$PROXY_PORT:127.0.0.1" --max-time 3)
[[ $FLOOD == 1 ]] && CURL_TLS+=(--haproxy-protocol)   # the servers require the PROXY header
URL="https://localhost:$PROXY_PORT/small"

# Ready = an mTLS request through the proxy returns the upstream's small file; then the proxy
# must refuse a client without a certificate and one from an untrusted CA.
check_proxy() { # NAME
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || die "$1 exited at start (logs in $T/$1)"
        if curl -fsS "${CURL_TLS[@]}" --cert "$PKI/client.crt" --key "$PKI/client.key" "$URL" \
            2>/dev/null | cmp -s - "$T/upstream/www/small"; then
            break
        fi
        sleep 0.1
    done
    ((i < 100)) || die "$1 does not answer mTLS requests (logs in $T/$1)"
    if curl -fsS "${CURL_TLS[@]}" "$URL" >/dev/null 2>&1; then
        die "$1 admitted a client without a certificate"
    fi
    if curl -fsS "${CURL_TLS[@]}" --cert "$PKI/client-other.crt" --key "$PKI/client-other.key" \
        "$URL" >/dev/null 2>&1; then
        die "$1 admitted a client from an untrusted CA"
    fi
}

RESULTS=$T/results.jsonl
: >"$RESULTS"
loadgen() { # NAME MODE ARGS...: one JSON line into $RESULTS
    local name=$1 mode=$2
    shift 2
    local out
    if ! out=$(timeout 60 "$LOADGEN_BIN" --mode "$mode" --port "$PROXY_PORT" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" \
        --server-pid "$SERVER_PID" --upstream-pid "$UP_PID" --label "$name" \
        --warmup "$WARMUP" "$@" 2>"$T/loadgen-$name-$mode.err"); then
        log "$name $mode: loadgen failed: $(head -c 400 "$T/loadgen-$name-$mode.err")"
    fi
    [[ -n "$out" ]] && echo "$out" >>"$RESULTS"
    if [[ -s "$T/loadgen-$name-$mode.err" ]]; then
        log "$name $mode: $(head -3 "$T/loadgen-$name-$mode.err" | tr '\n' ' ')"
    fi
    return 0
}

# --flood: one loadgen run of a phase (NAME SCENARIO MODE ARGS...), one JSON line into $RESULTS.
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

IFS=, read -r -a SERVERS <<<"$ONLY"
for name in "${SERVERS[@]}"; do
    case "$name" in mtlsd | nginx | haproxy) ;; *) die "unknown server $name" ;; esac
    if [[ $FLOOD == 1 ]]; then
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
        stop_pid "$SERVER_PID"
        forget_pid "$SERVER_PID"
        continue
    fi
    log "$name: start"
    "start_$name"
    PIDS+=("$SERVER_PID")
    check_proxy "$name"
    log "$name: handshakes (${HS_S}s, $HS_THREADS threads)"
    loadgen "$name" handshakes --duration "$HS_S" --threads "$HS_THREADS"
    log "$name: requests (${REQ_S}s, $REQ_CONNS keep-alive connections)"
    loadgen "$name" requests --duration "$REQ_S" --connections "$REQ_CONNS"
    log "$name: bulk (${BULK_S}s, $BULK_CONNS connections, ${LARGE_MIB} MiB bodies)"
    loadgen "$name" bulk --duration "$BULK_S" --connections "$BULK_CONNS"
    log "$name: idle memory ($IDLE_CONNS connections)"
    loadgen "$name" idle --connections "$IDLE_CONNS" --threads "$HS_THREADS" --settle "$SETTLE"
    stop_pid "$SERVER_PID"
    forget_pid "$SERVER_PID"
done

log "done in $(($(date +%s) - START)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n "$OUT_FILE" ]] && cp "$RESULTS" "$OUT_FILE"
python3 "$ROOT/bench/report.py" "$RESULTS" \
    --note "$NPROC cores; load average $(cut -d' ' -f1-3 /proc/loadavg); tickets=$TICKETS; access_log=$ACCESS_LOG; quick=$QUICK; flood=$FLOOD"
