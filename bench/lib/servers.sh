# shellcheck shell=bash
# bench/lib/servers.sh — sourced by bench/run.sh and bench/h2.sh: the three proxies, each
# configured from the variant variables below, started on PROXY_PORT in front of the upstream
# (UP_PORT).
#
# Variant (set by server_up's caller; every workload says which it needs):
#   V_WORKERS    1 (pinned to core 0 when there are >= 2 cores, unless V_PIN=0) or more (not
#                pinned)
#   V_PIN        1 = a single worker is pinned as above; 0 = not pinned (workers2's one-worker
#                baseline, on the same cores as its two-worker windows)
#   V_TICKETS    TLS 1.3 session tickets per handshake, 0 or 1, on every server
#   V_ACCESS_LOG 1 = mtlsd writes its access log to a file (the others log nothing)
#   V_HTTP       1 = the HTTP workload: mtlsd with an `http:` block, nginx's http module
#                (proxy_pass with an upstream keep-alive pool), HAProxy mode http;
#                0 = layer 4: mtlsd server mode, nginx stream, HAProxy mode tcp
#   V_HTTP_BLOCK mtlsd's `http:` block with V_HTTP=1: {} = the shipped defaults (X-Forwarded-
#                Client-Cert: sanitize_set); bench/h2.sh adds HTTP/2
#   V_IDENTITY   with V_HTTP=1: 1 = every proxy tells the upstream who the client is, as mtlsd
#                does by default: X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Client-Cert
#                (nginx and HAProxy configured to add them: the same work for all three);
#                0 = none of them adds a header (mtlsd with all three turned off)
#   V_FLOOD      1 = --flood: PROXY v1 required, a per-source cap (bench/lib/flood.sh)
#   V_LOG_LEVEL  mtlsd's log level: warn (quiet), info for reload (its "reloaded" line)
V_WORKERS=1 V_PIN=1 V_TICKETS=0 V_ACCESS_LOG=0 V_HTTP=0 V_HTTP_BLOCK="{}" V_IDENTITY=1 V_FLOOD=0
V_LOG_LEVEL=warn

NGINX_STREAM_MODULE=""
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
    [[ -f "$m" ]] && { NGINX_STREAM_MODULE=$m; break; }
done
nginx_stream_load() { # the load_module line this nginx needs for `stream {}` ("" if built in)
    if nginx -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
        [[ -n "$NGINX_STREAM_MODULE" ]] ||
            die "nginx's stream module is not installed (apt-get install libnginx-mod-stream)"
        echo "load_module $NGINX_STREAM_MODULE;"
    elif ! nginx -V 2>&1 | grep -q -- '--with-stream'; then
        die "this nginx has no stream module"
    fi
}
server_cpus() { # "" = not pinned
    ((V_WORKERS == 1 && ${V_PIN:-1} == 1)) && echo "$SERVER_CPUS"
    return 0
}

start_mtlsd() {
    local d=$T/mtlsd
    mkdir -p "$d"
    local resumption=false access=false http="" flood_cfg=""
    [[ $V_TICKETS == 1 ]] && resumption=true
    [[ $V_ACCESS_LOG == 1 ]] && access=true
    [[ $V_HTTP == 1 ]] && http="    http: $V_HTTP_BLOCK"
    [[ $V_HTTP == 1 && $V_IDENTITY == 0 ]] &&
        http="    http: {x_forwarded_for: off, x_forwarded_proto: off, forward_client_cert_details: forward_only}"
    if [[ $V_FLOOD == 1 ]]; then
        # Every connection begins with a PROXY v1 header; its source is what the per-source
        # cap counts. A long handshake deadline keeps the flooder's held places held.
        flood_cfg="    accept_proxy_protocol: {versions: [v1]}
    limits: {max_connections_per_source: $PER_SOURCE}
    timeouts: {handshake: 30s}"
    fi
    cat >"$d/mtlsd.yaml" <<EOF
admin: {address: ""}
sandbox: $MTLSD_SANDBOX
log: {level: ${V_LOG_LEVEL:-warn}, format: text, access_log: $access, access_log_path: "$d/access.log"}
workers: $V_WORKERS
reload: {watch: false}
shutdown: {drain_timeout: 1s}
listeners:
  - name: bench
    mode: server
    listen: 127.0.0.1:$PROXY_PORT
    upstream: 127.0.0.1:$UP_PORT
    max_connections: 100000
$flood_cfg
$http
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
    set_pin "$(server_cpus)"
    "${PIN[@]}" "${WRAP[@]}" "$MTLSD_BIN" run --config "$d/mtlsd.yaml" \
        >"$d/stdout.log" 2>"$d/stderr.log" &
    SERVER_PID=$!
}

# The TLS lines nginx's http and stream modules share.
nginx_tls_lines() {
    local tickets="ssl_session_tickets off;"
    [[ $V_TICKETS == 1 ]] && tickets="ssl_session_tickets on;"
    cat <<EOF
    ssl_certificate $PKI/server.crt;
    ssl_certificate_key $PKI/server.key;
    ssl_client_certificate $PKI/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 4;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    $tickets
    ssl_conf_command NumTickets $V_TICKETS;
EOF
}

# With V_IDENTITY=1, what mtlsd's shipped defaults send the upstream. nginx 1.22 has no
# variable for the certificate's SANs or its SHA-256, so its X-Forwarded-Client-Cert carries the
# SHA-1 fingerprint and the subject only (a little less work than mtlsd's).
nginx_identity_lines() {
    [[ $V_IDENTITY == 1 ]] || return 0
    # shellcheck disable=SC2016 # nginx's variables, expanded by nginx
    printf '\n      %s' \
        'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;' \
        'proxy_set_header X-Forwarded-Proto https;' \
        'proxy_set_header X-Forwarded-Client-Cert "Hash=$ssl_client_fingerprint;Subject=\"$ssl_client_s_dn\"";'
}

# HTTP proxy_pass with an upstream keep-alive pool; bench/h2.sh adds `http2` to the listen line,
# lines to the server block and lines to the location.
nginx_http_block() { # DIR [LISTEN-FLAGS [SERVER-LINES [LOCATION-LINES]]]
    cat <<EOF
http {
  access_log off;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
$(nginx_temp_paths "$1")
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:$PROXY_PORT ssl${2:+ $2} backlog=4096;
$(nginx_tls_lines)${3:+
$3}
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;$(nginx_identity_lines)${4:+
$4}
    }
  }
}
EOF
}

nginx_stream_block() { # layer 4, like mtlsd's server mode
    cat <<EOF
stream {
  tcp_nodelay on;
  server {
    listen 127.0.0.1:$PROXY_PORT ssl backlog=4096;
$(nginx_tls_lines)
    proxy_pass 127.0.0.1:$UP_PORT;
    proxy_timeout 600s;
  }
}
EOF
}

start_nginx() { # [ARGS...]: with V_HTTP=1, nginx_http_block's after DIR
    local d=$T/nginx
    rm -rf "$d"
    mkdir -p "$d/tmp"
    {
        [[ $V_HTTP == 1 ]] || nginx_stream_load
        echo "worker_processes $V_WORKERS;"
        nginx_common "$d"
        if [[ $V_HTTP == 1 ]]; then nginx_http_block "$d" "$@"; else nginx_stream_block; fi
    } >"$d/nginx.conf"
    nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "nginx config rejected"
    set_pin "$(server_cpus)"
    "${PIN[@]}" "${WRAP[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" \
        -g "daemon off; $NGINX_GLOBAL" >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
}

start_haproxy() {
    local d=$T/haproxy
    mkdir -p "$d"
    cat "$PKI/server.crt" "$PKI/server.key" >"$d/server.pem"
    # No session cache on any server: nginx has `ssl_session_cache off`, mtlsd none; with
    # tickets on, HAProxy's cache cost it ~0.5% more instructions per resumed handshake (review).
    local global_tls="tune.ssl.cachesize 0" bind_tls="" mode=tcp http_lines="" frontend_lines=""
    [[ $V_TICKETS == 0 ]] && bind_tls="no-tls-tickets"
    if [[ $V_HTTP == 1 ]]; then
        mode=http
        http_lines="  option http-keep-alive
  http-reuse always
  timeout http-keep-alive 600s"
        # V_IDENTITY=1: what mtlsd's shipped defaults send the upstream (nginx_identity_lines).
        [[ $V_IDENTITY == 1 ]] && http_lines+="
  option forwardfor" frontend_lines='
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_der,sha2(256),hex];Subject=\"%[ssl_c_s_dn]\""'
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
NumTickets = $V_TICKETS
EOF
    cat >"$d/haproxy.cfg" <<EOF
global
  nbthread $V_WORKERS
  maxconn $(( ($(ulimit -n) - 100) / 2 ))
  $global_tls
defaults
  mode $mode
  timeout connect 5s
  timeout client 600s
  timeout server 600s
$http_lines
frontend fe
  bind 127.0.0.1:$PROXY_PORT ssl crt $d/server.pem ca-file $PKI/ca.crt verify required ssl-min-ver TLSv1.3 $bind_tls$frontend_lines
  default_backend be
backend be
  server up 127.0.0.1:$UP_PORT
EOF
    OPENSSL_CONF=$d/openssl.cnf haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy config rejected"
    set_pin "$(server_cpus)"
    OPENSSL_CONF=$d/openssl.cnf "${PIN[@]}" "${WRAP[@]}" haproxy -db -f "$d/haproxy.cfg" \
        >"$d/stdout.log" 2>&1 &
    SERVER_PID=$!
}

# The one TLS 1.3 suite the load generator offers (bench/loadgen.cpp, make_ctx): every server
# negotiates it, whatever order it prefers (review: with OpenSSL's default offer mtlsd took
# AES-128 by its own preference, nginx and HAProxy AES-256 by the client's order).
BENCH_SUITE=TLS_AES_128_GCM_SHA256

# Ready = an mTLS request through the proxy returns the upstream's small file; then the proxy
# must refuse a client without a certificate and one from an untrusted CA, and negotiate
# BENCH_SUITE with a client that offers it alone, as the load generator does.
check_proxy() { # NAME
    local i url="https://localhost:$PROXY_PORT/small"
    local tls=(--cacert "$PKI/ca.crt" --resolve "localhost:$PROXY_PORT:127.0.0.1" --max-time 3)
    [[ $V_FLOOD == 1 ]] && tls+=(--haproxy-protocol)   # the servers require the PROXY header
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || die "$1 exited at start (logs in $T/$1)"
        if curl -fsS "${tls[@]}" --cert "$PKI/client.crt" --key "$PKI/client.key" "$url" \
            2>/dev/null | cmp -s - "$T/upstream/www/small"; then
            break
        fi
        sleep 0.1
    done
    ((i < 100)) || die "$1 does not answer mTLS requests (logs in $T/$1)"
    if curl -fsS "${tls[@]}" "$url" >/dev/null 2>&1; then
        die "$1 admitted a client without a certificate"
    fi
    if curl -fsS "${tls[@]}" --cert "$PKI/client-other.crt" --key "$PKI/client-other.key" \
        "$url" >/dev/null 2>&1; then
        die "$1 admitted a client from an untrusted CA"
    fi
    [[ $V_FLOOD == 1 ]] && return 0   # s_client cannot send the PROXY header they require
    local suite
    suite=$(timeout 10 openssl s_client -connect "127.0.0.1:$PROXY_PORT" -servername localhost \
        -cert "$PKI/client.crt" -key "$PKI/client.key" -CAfile "$PKI/ca.crt" \
        -ciphersuites "$BENCH_SUITE" </dev/null 2>&1 | sed -n 's/^New, TLSv1\.3, Cipher is //p' |
        head -n 1 || true)
    [[ "$suite" == "$BENCH_SUITE" ]] ||
        die "$1 negotiated '${suite:-no handshake}' with a client offering $BENCH_SUITE alone"
}

# ON_SERVER_UP / ON_SERVER_DOWN: hooks (--profile attaches perf to the server with them).
ON_SERVER_UP=: ON_SERVER_DOWN=:
# WRAP: a command the servers are started under (--instructions: valgrind); NGINX_GLOBAL: more
# of nginx's -g directives; MTLSD_SANDBOX: mtlsd's `sandbox:` (bench/lib/profile.sh).
WRAP=() NGINX_GLOBAL="" MTLSD_SANDBOX=true
server_up() { # NAME [START...]: start it (start_NAME, or START) with the current variant, wait
    if (($# > 1)); then "${@:2}"; else "start_$1"; fi  # until it answers
    PIDS+=("$SERVER_PID")
    check_proxy "$1"
    "$ON_SERVER_UP"
}
server_down() {
    "$ON_SERVER_DOWN"
    stop_pid "$SERVER_PID"
    forget_pid "$SERVER_PID"
}
