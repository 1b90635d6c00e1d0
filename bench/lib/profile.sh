# shellcheck shell=bash
# bench/lib/profile.sh — sourced by bench/run.sh: --profile WORKLOAD runs one workload under
# `perf record -g` (Debian's linux-perf) against mtlsd, or against each server named by --only,
# and writes the time by library and the top symbols to bench/profiles/WORKLOAD.txt (mtlsd) or
# bench/profiles/WORKLOAD-SERVER.txt (nginx, haproxy). Setting a peer's profile beside mtlsd's
# shows which share of the time no proxy on the same OpenSSL and kernel can avoid.
# --instructions WORKLOAD runs each server under callgrind (valgrind) instead and writes
# bench/profiles/WORKLOAD-instructions.md: user-space instructions per operation by library.
# --syscalls WORKLOAD counts the system calls instead (`perf stat`, every syscalls:sys_enter_*
# tracepoint) and writes bench/profiles/WORKLOAD-syscalls.md: calls per operation by name, one
# column per server, and the context switches (how often the server slept and was woken again:
# a cost of its own, `schedule` in the profiles). Counts, unlike CPU time, do not drift with the
# machine's load. --switches WORKLOAD counts only the context switches and the CPU time, without
# the tracepoints, and writes bench/profiles/WORKLOAD-switches.md.

PERF_PID="" PROFILE_KIND=record INSTR_ON_PID=""
profile_start() { # hook run by server_up: attach perf to the server just started and its
    # children (nginx's worker)
    local pids
    pids=$(printf '%s\n' "$SERVER_PID" $(pgrep -P "$SERVER_PID") | paste -sd, -)
    if [[ $PROFILE_KIND == instructions ]]; then
        # On when the load generator's window opens (after its warm-up, which opens the
        # connections: their handshakes are not the workload's operations).
        (sleep "$WARMUP"; callgrind_control -i on "$SERVER_PID") >"$T/callgrind.log" 2>&1 &
        INSTR_ON_PID=$!
        return 0
    fi
    if [[ $PROFILE_KIND == syscalls || $PROFILE_KIND == switches ]]; then
        # --switches counts without the syscall tracepoints: each traced call costs the server
        # time, so it catches up (and sleeps) less often than untraced.
        local events='syscalls:sys_enter_*,context-switches'
        [[ $PROFILE_KIND == switches ]] && events='context-switches,task-clock'
        perf stat -e "$events" -x, -p "$pids" -o "$T/perf.stat" >"$T/perf.log" 2>&1 &
    else
        perf record -g -F 999 -p "$pids" -o "$T/perf.data" >"$T/perf.log" 2>&1 &
    fi
    PERF_PID=$!
    sleep 0.5   # perf needs a moment to attach; the workload's warm-up covers the rest
}
profile_stop() { # hook run by server_down: stop perf first, so the shutdown is not in the profile
    if [[ $PROFILE_KIND == instructions ]]; then
        wait "$INSTR_ON_PID" || die "callgrind_control failed ($(tail -2 "$T/callgrind.log"))"
        callgrind_control -i off "$SERVER_PID" >>"$T/callgrind.log" 2>&1
        callgrind_control -d "$SERVER_PID" >>"$T/callgrind.log" 2>&1
        return 0
    fi
    [[ -n "$PERF_PID" ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
}

# WORKLOAD SERVER...: the servers named that the workload runs on (WL_SERVERS: access_log,
# http_accesslog and the like are mtlsd's alone), with a line for each left out; dies when none
# is left.
servers_of() {
    local wl=$1 s kept=()
    shift
    for s in "$@"; do
        if [[ " $(wl_servers "$wl") " == *" $s "* ]]; then kept+=("$s"); else
            log "$wl does not run on $s: left out"
        fi
    done
    ((${#kept[@]} > 0)) || die "$wl runs on none of: $* (it runs on $(wl_servers "$wl"))"
    echo "${kept[@]}"
}

tidy_perf() { # perf report's lines without comments, blank lines and the padding it adds
    grep -v -e '^#' -e '^[[:space:]]*$' | sed -E 's/[[:space:]]+(-[[:space:]]+-)?[[:space:]]*$//'
}

profile_main() { # WORKLOAD SERVER
    local wl=$1 server=$2 out_dir=$ROOT/bench/profiles
    declare -F "wl_$wl" >/dev/null || die "--profile: no workload $wl (one of: ${WORKLOADS[*]})"
    command -v perf >/dev/null || die "perf not found (apt-get install linux-perf)"
    mkdir -p "$out_dir"
    local out=$out_dir/$wl.txt
    [[ $server == mtlsd ]] || out=$out_dir/$wl-$server.txt
    ON_SERVER_UP=profile_start ON_SERVER_DOWN=profile_stop
    ROUND=1 WORKLOAD=$wl
    : >"$RESULTS"
    log "profile: $wl on $server under perf record -g"
    "wl_$wl" "$server"
    [[ -s "$T/perf.data" ]] || die "perf recorded nothing ($(tail -3 "$T/perf.log"))"
    local version="${MTLSD_BIN_SOURCE:-$MTLSD_BIN} (sha256 ${MTLSD_SHA256:-unknown})"
    [[ $server == mtlsd ]] || version=$("$server" -v 2>&1 | awk 'NR == 1')
    {
        echo "# bench/run.sh --profile $wl --only $server — written by the script; do not edit"
        echo "# $(date -u '+%F %T UTC'); $server $version ($(git -C "$ROOT" rev-parse --short HEAD))"
        echo "# $NPROC cores, load average $(cut -d' ' -f1-3 /proc/loadavg); perf record -g -F 999"
        echo "# the workload's loadgen result:"
        sed 's/^/#   /' "$RESULTS"
        echo
        echo "## Self time by library (perf report --no-children --sort dso)"
        perf report -i "$T/perf.data" --stdio --no-children --sort dso -g none \
            --percent-limit 0.3 2>/dev/null | tidy_perf | sed -n 1,20p
        echo
        echo "## Self time by symbol (perf report --no-children --sort dso,symbol)"
        perf report -i "$T/perf.data" --stdio --no-children --sort dso,symbol -g none \
            --percent-limit 0.3 2>/dev/null | tidy_perf | sed -n 1,60p
        echo
        echo "## Time including callees (perf report --children --sort symbol)"
        perf report -i "$T/perf.data" --stdio --children --sort symbol -g none \
            --percent-limit 2 2>/dev/null | tidy_perf | sed -n 1,50p
    } >"$out"
    log "profile written to ${out#"$ROOT"/}"
}

syscalls_main() { # WORKLOAD SERVER...: syscalls per operation, one column per server
    perf_stat_main syscalls "$@"
}

switches_main() { # WORKLOAD SERVER...: sleeps and CPU per operation, no tracepoints
    perf_stat_main switches "$@"
}

perf_stat_main() { # KIND WORKLOAD SERVER...: one `perf stat` run per server, then KIND's table
    local kind=$1 wl=$2 server out=$ROOT/bench/profiles/$2-$1.md counts=() servers=()
    shift 2
    declare -F "wl_$wl" >/dev/null || die "--$kind: no workload $wl (one of: ${WORKLOADS[*]})"
    command -v perf >/dev/null || die "perf not found (apt-get install linux-perf)"
    ON_SERVER_UP=profile_start ON_SERVER_DOWN=profile_stop PROFILE_KIND=$kind
    # No warm-up: perf counts from the server's start, so every operation must be in the count.
    WARMUP=0 ROUND=1 WORKLOAD=$wl
    read -r -a servers <<<"$(servers_of "$wl" "$@")"
    ((${#servers[@]} > 0)) || exit 1
    for server in "${servers[@]}"; do
        variant_reset
        : >"$RESULTS"
        rm -f "$T/perf.stat"   # a perf that failed to attach must not pass off the last count
        log "$kind: $wl on $server under perf stat"
        "wl_$wl" "$server"
        [[ -s "$T/perf.stat" ]] || die "perf counted nothing ($(tail -3 "$T/perf.log"))"
        cp "$T/perf.stat" "$T/$server.stat"
        cp "$RESULTS" "$T/$server.json"
        counts+=("$server" "$T/$server.stat" "$T/$server.json")
    done
    write_table "$out" "--$kind $wl --only $(IFS=,; echo "${servers[*]}")" "$NPROC cores" \
        "${kind}_table.py" "${counts[@]}"
    log "$kind counts written to ${out#"$ROOT"/}"
}

write_table() { # OUT WHAT NOTE SCRIPT ARGS...: bench/SCRIPT's table under two comment lines
    local out=$1 what=$2 note=$3 script=$4
    shift 4
    mkdir -p "$(dirname "$out")"
    {
        echo "# bench/run.sh $what — written by the script; do not edit"
        echo "# $(date -u '+%F %T UTC'); mtlsd ${MTLSD_BIN_SOURCE:-$MTLSD_BIN}" \
            "(sha256 ${MTLSD_SHA256:-unknown}, $(git -C "$ROOT" rev-parse --short HEAD)); $note"
        echo
        "$ROOT/bench/$script" "$@"
    } >"$out"
    cat "$out"
}

instructions_main() { # WORKLOAD SERVER...: user-space instructions per operation (callgrind)
    local wl=$1 server out=$ROOT/bench/profiles/$1-instructions.md rows=() dump servers=()
    shift
    declare -F "wl_$wl" >/dev/null || die "--instructions: no workload $wl (one of: ${WORKLOADS[*]})"
    command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
    ON_SERVER_UP=profile_start ON_SERVER_DOWN=profile_stop PROFILE_KIND=instructions
    # Instrumented only during the load generator's window (profile_start), so the operations
    # it counts are the ones in the dump, give or take a few at the edges. nginx in one process (master_process off), so that one callgrind sees the
    # worker; mtlsd without its sandbox (its seccomp filter refuses valgrind's own system calls).
    ROUND=1 WORKLOAD=$wl NGINX_GLOBAL="master_process off;" MTLSD_SANDBOX=false
    # Under valgrind a handshake takes the server ~50 times as long: the keep-alive workloads'
    # 32 connections took more than --quick's 0.5 s warm-up on a busy machine, timed out (5 s)
    # and reconnected inside the window, whose count was then mostly handshakes. A warm-up of at
    # least 5 s and a patient client keep them out; a run that still failed some is flagged.
    WARMUP=$(awk "BEGIN{print ($WARMUP > 5 ? $WARMUP : 5)}") LOADGEN_ARGS=(--timeout 60)
    read -r -a servers <<<"$(servers_of "$wl" "$@")"
    ((${#servers[@]} > 0)) || exit 1
    for server in "${servers[@]}"; do
        variant_reset
        : >"$RESULTS"
        rm -f "$T"/callgrind.out.*
        WRAP=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$T/callgrind.out.%p")
        log "instructions: $wl on $server under callgrind"
        "wl_$wl" "$server"
        WRAP=()
        dump=$(ls -S "$T"/callgrind.out.* 2>/dev/null | head -1)
        [[ -n "$dump" ]] || die "callgrind wrote nothing ($(tail -3 "$T/callgrind.log"))"
        grep -q '"errors":[1-9]' "$RESULTS" &&
            log "WARNING: $server: the load generator counted errors: their retries (handshakes" &&
            log "WARNING: of new connections) may be in the count (the results: $(cat "$RESULTS"))"
        cp "$dump" "$T/$server.callgrind"
        cp "$RESULTS" "$T/$server.json"
        rows+=("$server" "$T/$server.callgrind" "$T/$server.json")
    done
    write_table "$out" "--instructions $wl --only $(IFS=,; echo "${servers[*]}")" \
        "callgrind, user space only" instructions_table.py "${rows[@]}"
    log "instruction counts written to ${out#"$ROOT"/}"
}
