# shellcheck shell=bash
# bench/lib/build.sh — sourced by bench/run.sh: the mtlsd, mtlsd_loadgen and mtlsd_idle_floor
# binaries it measures with (MTLSD_BIN / LOADGEN_BIN / IDLE_FLOOR_BIN, built here unless given).
find_binaries() {
    local build_log targets=()
    build_log=$(mktemp /tmp/mtlsd-bench-build.XXXXXX)
    [[ -z "${LOADGEN_BIN:-}" ]] &&
        targets+=(mtlsd_loadgen) LOADGEN_BIN="$ROOT/build/release/bench/mtlsd_loadgen"
    [[ -z "${IDLE_FLOOR_BIN:-}" ]] &&
        targets+=(mtlsd_idle_floor) IDLE_FLOOR_BIN="$ROOT/build/release/bench/mtlsd_idle_floor"
    if ((${#targets[@]} > 0)); then
        log "building ${targets[*]} (release preset, MTLSD_BUILD_BENCH=ON)"
        # Configure only when the option is not on yet (a reconfigure costs seconds).
        if ! grep -qs '^MTLSD_BUILD_BENCH:BOOL=ON' "$ROOT/build/release/CMakeCache.txt"; then
            (cd "$ROOT" && cmake --preset release -DMTLSD_BUILD_BENCH=ON >"$build_log" 2>&1) ||
                { cat "$build_log" >&2; die "cannot configure the release preset"; }
        fi
        (cd "$ROOT" && cmake --build --preset release -j2 --target "${targets[@]}" >>"$build_log" 2>&1) ||
            { cat "$build_log" >&2; die "cannot build ${targets[*]}"; }
    fi
    if [[ -z "${MTLSD_BIN:-}" ]]; then
        # Always brought up to date (incremental: seconds when nothing changed). Built only when
        # missing, a binary left from an earlier commit was measured under this commit's name.
        log "building mtlsd (release preset)"
        if (cd "$ROOT" && { [[ -f build/release/CMakeCache.txt ]] ||
                cmake --preset release >"$build_log" 2>&1; } &&
                cmake --build --preset release -j2 --target mtlsd >>"$build_log" 2>&1); then
            MTLSD_BIN="$ROOT/build/release/mtlsd"
        else
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
    rm -f "$build_log"
    [[ -x "$MTLSD_BIN" ]] || die "no mtlsd binary at $MTLSD_BIN"
    [[ -x "$LOADGEN_BIN" ]] || die "no loadgen binary at $LOADGEN_BIN"
    [[ -x "$IDLE_FLOOR_BIN" ]] || die "no mtlsd_idle_floor binary at $IDLE_FLOOR_BIN"
    log "mtlsd: $MTLSD_BIN ($(date -r "$MTLSD_BIN" '+built %F %T')); builds took $(($(date +%s) - START)) s"
    START=$(date +%s)   # the time budget (--quick: < 3 min) covers what follows, not the builds
    # The build type, from the binary's build directory (numbers of a Debug build mean little).
    MTLSD_BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' \
        "$(dirname "$MTLSD_BIN")/CMakeCache.txt" 2>/dev/null || true)
    [[ "$MTLSD_BUILD_TYPE" == Debug ]] &&
        log "WARNING: $MTLSD_BIN is a Debug build: its numbers say nothing about a release"
    return 0
}
