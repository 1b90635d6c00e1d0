#!/usr/bin/env bash
# bench/h2.sh — HTTP/2 through mtlsd's http: mode and through nginx (http2 + proxy_pass), both
# with an HTTP/1.1 keep-alive pool to the same upstream; the load from h2load (nghttp2-client)
# with a client certificate. Prints requests per proxy CPU-second side by side (and the ratio).
# Also called by bench/run.sh --h2. See bench/README.md, "HTTP/2".
#
#   bench/h2.sh [--quick] [--only LIST] [--out FILE] [--keep]
#
#   --quick      about 20 s (default: about a minute)
#   --only LIST  comma-separated subset of mtlsd,nginx (haproxy, if named, is ignored)
#   --out FILE   also write the raw results (one JSON object per line) to FILE
#   --keep       keep the temporary directory (configs, logs, PKI) and print its path
#
# Environment: MTLSD_BIN overrides the mtlsd binary (default build/release/mtlsd, built with the
# release preset when missing). Everything listens on 127.0.0.1; every process started here is
# stopped on exit.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
ONLY="mtlsd,nginx"
OUT_FILE=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY=${2:?}; shift ;;
        --out) OUT_FILE=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "h2.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

NPROC=$(nproc)
# h2load: REQUESTS in all over CONNS connections, STREAMS concurrent streams on each (HTTP/2) or
# one request at a time on each (HTTP/1.1 keep-alive); one h2load thread (the machine is small).
if [[ $QUICK == 1 ]]; then REQUESTS=20000; else REQUESTS=100000; fi
CONNS=16
STREAMS=10
WARMUP_REQUESTS=2000

for f in env servers; do
    # shellcheck source=/dev/null
    source "$ROOT/bench/lib/$f.sh"
done
# Both proxies run a worker per core (V_WORKERS=NPROC), so nothing is pinned, the upstream
# neither; it serves /small only.
CLIENT_CPUS="" LARGE_MIB=0
V_WORKERS=$NPROC V_HTTP=1
V_HTTP_BLOCK="{protocols: [h2, http/1.1], upstream_protocol: http/1.1, max_concurrent_streams: 100}"

for tool in h2load nginx curl openssl python3 cc; do
    command -v "$tool" >/dev/null || die "$tool not found (bench/README.md lists the packages)"
done

if [[ -z "${MTLSD_BIN:-}" ]]; then
    MTLSD_BIN="$ROOT/build/release/mtlsd"
    if [[ ! -x "$MTLSD_BIN" ]]; then
        log "building mtlsd (release preset)"
        (cd "$ROOT" && cmake --preset release >/dev/null &&
            cmake --build --preset release -j2 --target mtlsd >/dev/null) ||
            die "cannot build mtlsd (bench/run.sh has a fallback build; or set MTLSD_BIN)"
    fi
fi
[[ -x "$MTLSD_BIN" ]] || die "no mtlsd binary at $MTLSD_BIN"

T=$(mktemp -d /tmp/mtlsd-h2bench.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "machine: $NPROC cores, load average $(cut -d' ' -f1-3 /proc/loadavg); mtlsd: $MTLSD_BIN"

# h2load has no client-certificate option: a preloaded wrapper of SSL_CTX_new adds one.
cc -shared -fPIC -O2 -o "$T/h2load_client_cert.so" "$ROOT/bench/h2load_client_cert.c" -ldl -lssl ||
    die "cannot build bench/h2load_client_cert.c (needs gcc and libssl-dev)"
"$ROOT/scripts/gen-pki.sh" "$T/pki" >/dev/null
PKI=$T/pki
read -r UP_PORT PROXY_PORT < <(free_ports 2)
start_upstream

# nginx 1.22 speaks HTTP/2 only downstream: proxy_pass is HTTP/1.x (HTTP/1.1 keep-alive pool
# here). Its X-Forwarded-Client-Cert/-For/-Proto lines (V_IDENTITY=1, servers.sh's
# nginx_identity_lines) stand in for mtlsd's work on those headers.
start_nginx_h2() {
    start_nginx http2 "    http2_max_concurrent_streams 100;"
}

# Ready (servers.sh's check_proxy: mTLS answers, no certificate and an untrusted CA refused),
# and the answer came over HTTP/2.
check_http2() { # NAME
    local version
    version=$(curl -fsS --http2 --cacert "$PKI/ca.crt" --max-time 3 \
        --resolve "localhost:$PROXY_PORT:127.0.0.1" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" -o /dev/null -w '%{http_version}' \
        "https://localhost:$PROXY_PORT/small") || die "$1: HTTP/2 request failed"
    [[ $version == 2 ]] || die "$1 answered over HTTP/$version, not HTTP/2"
}

# CPU seconds (utime + stime, every thread) of a process and its descendants, as
# bench/loadgen.cpp counts them (nginx's workers are children of its master).
tree_cpu() { # PID...
    python3 - "$@" <<'EOF'
import os, sys
stat = {}
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    stat[int(p)] = (int(f[1]), int(f[11]) + int(f[12]))   # ppid, utime + stime
todo, seen = [int(a) for a in sys.argv[1:]], set()
while todo:
    p = todo.pop()
    if p not in seen:
        seen.add(p)
        todo += [c for c, (pp, _) in stat.items() if pp == p]
print(sum(stat[p][1] for p in seen if p in stat) / os.sysconf("SC_CLK_TCK"))
EOF
}

RESULTS=$T/results.jsonl
: >"$RESULTS"
h2load_run() { # NAME MODE (h2 | h1): one JSON line into $RESULTS
    local name=$1 mode=$2 proto=() out s0 u0 s1 u1
    [[ $mode == h1 ]] && proto=(--h1 -m 1) || proto=(-m "$STREAMS")
    local url="https://127.0.0.1:$PROXY_PORT/small"
    local env=(H2LOAD_CLIENT_CERT="$PKI/client.crt" H2LOAD_CLIENT_KEY="$PKI/client.key"
        LD_PRELOAD="$T/h2load_client_cert.so")
    env "${env[@]}" h2load -t 1 -c "$CONNS" -n "$WARMUP_REQUESTS" "${proto[@]}" "$url" \
        >"$T/h2load-$name-$mode-warmup.log" 2>&1 || true
    s0=$(tree_cpu "$SERVER_PID"); u0=$(tree_cpu "$UP_PID")
    env "${env[@]}" timeout 300 h2load -t 1 -c "$CONNS" -n "$REQUESTS" "${proto[@]}" "$url" \
        >"$T/h2load-$name-$mode.log" 2>&1 || log "$name $mode: h2load failed (exit $?)"
    s1=$(tree_cpu "$SERVER_PID"); u1=$(tree_cpu "$UP_PID")
    python3 - "$name" "$mode" "$s0" "$s1" "$u0" "$u1" "$T/h2load-$name-$mode.log" \
        >>"$RESULTS" <<'EOF'
import json, re, sys
name, mode, s0, s1, u0, u1, path = sys.argv[1:]
text = open(path).read()
def num(pattern, default=0.0):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else default
wall = num(r"finished in ([\d.]+)s")
ok = num(r"(\d+) succeeded")
bad = num(r"(\d+) failed") + num(r"(\d+) errored") + num(r"(\d+) timeout")
non2xx = sum(num(rf"(\d+) {c}xx") for c in "345")
cpu = float(s1) - float(s0)
mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
print(json.dumps({
    "label": name, "mode": mode, "requests": int(ok), "errors": int(bad + non2xx),
    "wall_s": wall, "ops_per_s": round(ok / wall, 1) if wall else None,
    "server_cpu_s": round(cpu, 2), "ops_per_server_cpu_s": round(ok / cpu, 1) if cpu else None,
    "server_cores_busy": round(cpu / wall, 2) if wall else None,
    "upstream_cpu_s": round(float(u1) - float(u0), 2),
    "lat_mean_ms": round(float(mean.group(1)) * scale[mean.group(2)], 2) if mean else None,
}))
EOF
}

IFS=, read -r -a SERVERS <<<"$ONLY"
for name in "${SERVERS[@]}"; do
    case "$name" in
        mtlsd | nginx) ;;
        haproxy) log "haproxy: not in the HTTP/2 comparison (bench/README.md)"; continue ;;
        *) die "unknown server $name" ;;
    esac
    log "$name: start"
    if [[ $name == nginx ]]; then server_up nginx start_nginx_h2; else server_up mtlsd; fi
    check_http2 "$name"
    log "$name: h2 ($REQUESTS requests, $CONNS connections x $STREAMS streams)"
    h2load_run "$name" h2
    log "$name: h1 ($REQUESTS requests, $CONNS keep-alive connections)"
    h2load_run "$name" h1
    server_down
done

[[ -n "$OUT_FILE" ]] && cp "$RESULTS" "$OUT_FILE"
python3 "$ROOT/bench/h2_report.py" "$RESULTS" \
    --note "$NPROC cores; load average $(cut -d' ' -f1-3 /proc/loadavg); quick=$QUICK"
