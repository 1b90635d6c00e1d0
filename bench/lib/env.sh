# shellcheck shell=bash
# bench/lib/env.sh — sourced by bench/run.sh and bench/h2.sh: logging, process bookkeeping, CPU
# pinning, ports, the PKI and the upstream every proxy forwards to. Uses ROOT, T, KEEP, NPROC,
# LARGE_MIB.

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# --- processes started here: each is stopped on exit ------------------------------------------
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

# --- CPU pinning ------------------------------------------------------------------------------
# With two or more cores a single-worker proxy runs on core 0 and everything else (load
# generator, upstream) on the others, as issue 13's table was measured; a proxy with several
# workers is not pinned (it gets every core, and shares them with the load generator).
if ((NPROC >= 2)); then
    SERVER_CPUS=0
    CLIENT_CPUS=1-$((NPROC - 1))
else
    SERVER_CPUS=""
    CLIENT_CPUS=""
fi
# PIN: the command prefix that pins to CPUS ("" = none). An array put before the command, not
# a wrapper function: `"${PIN[@]}" cmd &` leaves $! the PID of cmd itself (taskset execs it).
set_pin() { # CPUS
    PIN=()
    [[ -n "$1" ]] && PIN=(taskset -c "$1")
    return 0
}

# --- free loopback ports ----------------------------------------------------------------------
free_ports() { # N: N free loopback ports on one line
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root;"   # workers must read files in the 0700 temp dir

nginx_common() { # DIR: the lines every nginx here shares
    cat <<EOF
$USER_LINE
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 32768; }
EOF
}
nginx_temp_paths() { # DIR
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $1/tmp/$d;"; done
}

# --- the upstream: one nginx worker serving a small and a large static file -------------------
# Pinned with the load generator, so a pinned proxy has its core to itself.
start_upstream() {
    local d=$T/upstream i
    mkdir -p "$d/www" "$d/tmp"
    printf 'hello from the upstream, %s\n' "$(printf 'x%.0s' {1..70})" >"$d/www/small"
    head -c $((LARGE_MIB * 1024 * 1024)) /dev/urandom >"$d/www/large"
    {
        echo "worker_processes 1;"
        nginx_common "$d"
        cat <<EOF
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  default_type application/octet-stream;
$(nginx_temp_paths "$d")
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    root $d/www;
  }
}
EOF
    } >"$d/nginx.conf"
    nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "upstream nginx config rejected"
    set_pin "$CLIENT_CPUS"
    "${PIN[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' \
        >"$d/stdout.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    for ((i = 0; i < 50; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$UP_PORT/small" 2>/dev/null && return 0
        sleep 0.1
    done
    die "upstream nginx did not start"
}

# --- what RESULTS.md says about the machine and the versions (one JSON object) ----------------
# The commit and tree are those mtlsd was built from (MTLSD_COMMIT, MTLSD_TREE: bench/lib/build.sh
# records them beside the build), not those at the end of the run; the SHA-256s are those of the
# copies the run measured (copy_binaries), whose --version is read here.
write_machine_json() { # FILE
    local cpu kernel mtlsd_v nginx_v haproxy_v openssl_v
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    kernel=$(uname -sr)
    mtlsd_v=$("$MTLSD_BIN" --version 2>&1 | awk 'NR == 1')
    nginx_v=$(nginx -v 2>&1 | awk 'NR == 1')
    haproxy_v=$(haproxy -v 2>&1 | awk 'NR == 1')
    openssl_v=$(openssl version)
    python3 - "$1" "$NPROC" "$cpu" "$kernel" "$mtlsd_v" "$nginx_v" "$haproxy_v" "$openssl_v" \
        "${MTLSD_COMMIT:-unknown}" "${MTLSD_TREE:-unknown}" \
        "${MTLSD_BIN_SOURCE:-$MTLSD_BIN}" "${MTLSD_BUILD_TYPE:-unknown}" \
        "${MTLSD_SHA256:-unknown}" "${LOADGEN_SHA256:-unknown}" \
        "${IDLE_FLOOR_SHA256:-unknown}" <<'EOF2'
import json, sys
keys = ["nproc", "cpu", "kernel", "mtlsd", "nginx", "haproxy", "openssl", "commit", "tree",
        "mtlsd_bin", "mtlsd_build_type", "mtlsd_sha256", "loadgen_sha256", "idle_floor_sha256"]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(dict(zip(keys, sys.argv[2:])), f)
EOF2
}
