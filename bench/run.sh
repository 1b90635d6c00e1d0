#!/usr/bin/env bash
# bench/run.sh — mtlsd against nginx and HAProxy: same machine, same PKI, same upstream, same
# client, workloads interleaved round by round. Prints the table (medians and min–max over the
# rounds, ratios mtlsd/nginx and mtlsd/haproxy, issue 13's targets with pass/fail) and writes it
# to bench/RESULTS.md. See bench/README.md for what each number means.
#
#   bench/run.sh [--quick] [--rounds N] [--workloads LIST] [--only LIST] [--results FILE]
#                [--out FILE] [--keep]
#   bench/run.sh --profile WORKLOAD [--quick] [--only LIST]
#   bench/run.sh --syscalls WORKLOAD [--quick] [--only LIST]
#   bench/run.sh --switches WORKLOAD [--quick] [--only LIST]
#   bench/run.sh --instructions WORKLOAD [--quick] [--only LIST]
#   bench/run.sh --flood [--quick] [--flood-rate N] [--tickets 0|1] [--access-log]
#
#   --quick          short windows, small scale, 1 round: ~3 minutes on a quiet machine (the
#                    full run: 3 rounds, ~24-26 minutes; bench/README.md, "How long")
#   --rounds N       rounds (default 3; --quick: 1)
#   --workloads LIST comma-separated subset of the workloads (default: a round's, bench/README.md;
#                    http_accesslog is only run when named)
#   --only LIST      comma-separated subset of mtlsd,nginx,haproxy
#   --results FILE   where the report goes (default bench/RESULTS.md; "" = nowhere)
#   --out FILE       also write the raw results (one JSON object per line) to FILE
#   --keep           keep the temporary directory (configs, logs, PKI) and print its path
#   --profile WL     run workload WL under `perf record -g` against mtlsd (or each server of
#                    --only) and write the time by library and the top symbols to
#                    bench/profiles/WL.txt (WL-nginx.txt, WL-haproxy.txt for the others); with
#                    more than one server, WL-compare.md sets their CPU per operation by
#                    library side by side (bench/profile_compare.py)
#   --syscalls WL    count the system calls per operation of workload WL on each server of
#                    --only (perf stat) -> bench/profiles/WL-syscalls.md
#   --switches WL    how often each server of --only slept and was woken per operation, and its
#                    CPU per operation, untraced (perf stat) -> bench/profiles/WL-switches.md
#   --instructions WL  user-space instructions per operation of workload WL on each server of
#                    --only, by library (valgrind's callgrind) -> bench/profiles/WL-instructions.md;
#                    WL http_accesslog is `http` with mtlsd's access log on (mtlsd only): beside
#                    --instructions http, what one access line costs per request
#   --flood          issue 17's measurement instead (bench/lib/flood.sh): one source floods
#                    a per-source cap while three others keep their rate; mtlsd and nginx
#   --flood-rate N   flood connections offered per second (default 3000; 0 = unpaced)
#   --tickets N      --flood only: session tickets per handshake (default 0)
#   --access-log     --flood only: access logs on (mtlsd, and nginx's refusal lines)
#   --h2             instead: HTTP/2 by h2load through mtlsd's http: mode and nginx (bench/h2.sh)
#
# Environment: MTLSD_BIN, LOADGEN_BIN, IDLE_FLOOR_BIN override the binaries (otherwise they are
# built). The run copies them into its temporary directory and runs the copies; RESULTS.md names
# the commit and tree state mtlsd was built from, read when it is built, and the SHA-256 of the
# copies; for a given MTLSD_BIN the commit is unknown unless MTLSD_BIN_COMMIT says it.
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 ROUNDS="" WL_LIST="" ONLY="mtlsd,nginx,haproxy" OUT_FILE="" KEEP=0
RESULTS_MD=$ROOT/bench/RESULTS.md PROFILE="" FLOOD=0 FLOOD_RATE=3000 TICKETS=0 ACCESS_LOG=0
H2=0 ONLY_GIVEN=0 SYSCALLS="" SWITCHES="" INSTRUCTIONS=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --workloads) WL_LIST=${2:?}; shift ;;
        --only) ONLY=${2:?} ONLY_GIVEN=1; shift ;;
        --results) RESULTS_MD=${2?}; shift ;;
        --out) OUT_FILE=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        --profile) PROFILE=${2:?}; shift ;;
        --syscalls) SYSCALLS=${2:?}; shift ;;
        --switches) SWITCHES=${2:?}; shift ;;
        --instructions) INSTRUCTIONS=${2:?}; shift ;;
        --flood) FLOOD=1 ;;
        --flood-rate) FLOOD_RATE=${2:?}; shift ;;
        --h2) H2=1 ;;
        --tickets) TICKETS=${2:?}; shift ;;
        --access-log) ACCESS_LOG=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$TICKETS" == 0 || "$TICKETS" == 1 ]] || { echo "run.sh: --tickets must be 0 or 1" >&2; exit 2; }
[[ $H2 == 1 ]] && exec "$ROOT/bench/h2.sh" --only "$ONLY" $([[ $QUICK == 1 ]] && echo --quick) \
    $([[ $KEEP == 1 ]] && echo --keep) ${OUT_FILE:+--out "$OUT_FILE"}
[[ -n "$ROUNDS" ]] || ROUNDS=$((QUICK == 1 ? 1 : 3))

START=$(date +%s)
NPROC=$(nproc)
if [[ $QUICK == 1 ]]; then
    WARMUP=0.5; HS_S=2; REQ_S=2; BULK_S=1.5; LAT_S=2; RELOAD_S=4; SETTLE=0.5
    IDLE_FEW=200; IDLE_MANY=600; PENDING_N=500; LARGE_MIB=8
else
    WARMUP=1; HS_S=${HS_S_OVERRIDE:-8}; REQ_S=8; BULK_S=5; LAT_S=8; RELOAD_S=9; SETTLE=1
    IDLE_FEW=2000; IDLE_MANY=8000; PENDING_N=2000; LARGE_MIB=32
fi
HS_THREADS=4; REQ_CONNS=32; BULK_CONNS=2; LAT_RATE=5000; LAT_CONNS=16

for f in env build servers workloads flood profile; do
    # shellcheck source=/dev/null
    source "$ROOT/bench/lib/$f.sh"
done
# More workloads, each in a file of its own: bench/lib/workload-NAME.sh defines wl_NAME (as in
# bench/lib/workloads.sh) and appends NAME to WORKLOADS.
for f in "$ROOT"/bench/lib/workload-*.sh; do
    # shellcheck source=/dev/null
    [[ -e "$f" ]] && source "$f"
done
for tool in openssl nginx haproxy curl python3 cmake taskset; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
find_binaries

T=$(mktemp -d /tmp/mtlsd-bench.XXXXXX)
RESULTS=$T/results.jsonl
: >"$RESULTS"
trap cleanup EXIT
trap 'exit 130' INT TERM
copy_binaries   # the run measures these copies (bench/lib/build.sh)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "machine: $NPROC cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(openssl version)"
"$ROOT/scripts/gen-pki.sh" "$T/pki" >/dev/null
PKI=$T/pki
read -r UP_PORT PROXY_PORT < <(free_ports 2)
start_upstream

IFS=, read -r -a SERVERS <<<"$ONLY"
for name in "${SERVERS[@]}"; do
    case "$name" in mtlsd | nginx | haproxy) ;; *) die "unknown server $name" ;; esac
done
if [[ -n "$WL_LIST" ]]; then
    IFS=, read -r -a WORKLOADS <<<"$WL_LIST"
    for wl in "${WORKLOADS[@]}"; do declare -F "wl_$wl" >/dev/null || die "unknown workload $wl"; done
fi

variant_reset() {
    V_WORKERS=1 V_PIN=1 V_TICKETS=0 V_ACCESS_LOG=0 V_HTTP=0 V_IDENTITY=1 V_FLOOD=0 V_LOG_LEVEL=warn
}

# The servers of a workload that --only keeps, rotated by the round (round 1 starts with the
# first, round 2 with the second, ...) so no server always runs first or last.
round_order() { # WORKLOAD
    local all=() kept=() s i n
    read -r -a all <<<"$(wl_servers "$1")"
    for s in "${all[@]}"; do [[ ",$ONLY," == *",$s,"* ]] && kept+=("$s"); done
    n=${#kept[@]}
    for ((i = 0; i < n; i++)); do echo "${kept[$(((i + ROUND - 1) % n))]}"; done
}

run_rounds() {
    local wl name
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        for wl in "${WORKLOADS[@]}"; do
            for name in $(round_order "$wl"); do
                variant_reset
                WORKLOAD=$wl
                log "round $ROUND/$ROUNDS, $wl: $name"
                "wl_$wl" "$name"
            done
        done
    done
}

if [[ -n "$SYSCALLS" ]]; then
    syscalls_main "$SYSCALLS" "${SERVERS[@]}"
    exit 0
fi
if [[ -n "$SWITCHES" ]]; then
    switches_main "$SWITCHES" "${SERVERS[@]}"
    exit 0
fi
if [[ -n "$INSTRUCTIONS" ]]; then
    instructions_main "$INSTRUCTIONS" "${SERVERS[@]}"
    exit 0
fi
if [[ -n "$PROFILE" ]]; then
    # --profile alone profiles mtlsd; with --only, each server named
    [[ $ONLY_GIVEN == 1 ]] || SERVERS=(mtlsd)
    declare -F "wl_$PROFILE" >/dev/null || die "--profile: no workload $PROFILE (one of: ${WORKLOADS[*]})"
    read -r -a SERVERS <<<"$(servers_of "$PROFILE" "${SERVERS[@]}")"
    ((${#SERVERS[@]} > 0)) || exit 1
    profiled=()
    for name in "${SERVERS[@]}"; do
        variant_reset
        profile_main "$PROFILE" "$name"
        profiled+=("$ROOT/bench/profiles/$PROFILE$([[ $name == mtlsd ]] || echo "-$name").txt")
    done
    if ((${#profiled[@]} > 1)); then
        { echo "# bench/run.sh --profile $PROFILE --only $ONLY — CPU per operation by library"
          echo "# (bench/profile_compare.py; written by the script; do not edit)"; echo
          "$ROOT/bench/profile_compare.py" "${profiled[@]}"; } >"$ROOT/bench/profiles/$PROFILE-compare.md"
        cat "$ROOT/bench/profiles/$PROFILE-compare.md"
    fi
    exit 0
fi
if [[ $FLOOD == 1 ]]; then
    [[ "$ONLY" == "mtlsd,nginx,haproxy" ]] && SERVERS=(mtlsd nginx)
    flood_main
else
    run_rounds
    idle_floor "$T/idle_floor.txt"
fi

log "done in $(($(date +%s) - START)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n "$OUT_FILE" ]] && cp "$RESULTS" "$OUT_FILE"
write_machine_json "$T/machine.json"
report_args=("$RESULTS" --machine "$T/machine.json"
    --note "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); quick=$QUICK; rounds=$ROUNDS; flood=$FLOOD")
[[ $QUICK == 1 ]] && report_args+=(--quick)
[[ -n "$RESULTS_MD" && $FLOOD == 0 ]] && report_args+=(--markdown "$RESULTS_MD")
[[ -s "$T/idle_floor.txt" ]] && report_args+=(--floor "$T/idle_floor.txt")
python3 "$ROOT/bench/report.py" "${report_args[@]}"
[[ -n "$RESULTS_MD" && $FLOOD == 0 ]] && log "wrote ${RESULTS_MD#"$ROOT"/}"
exit 0
