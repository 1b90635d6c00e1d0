# shellcheck shell=bash
# bench/lib/build.sh — sourced by bench/run.sh: the mtlsd, mtlsd_loadgen and mtlsd_idle_floor
# binaries it measures with (MTLSD_BIN / LOADGEN_BIN / IDLE_FLOOR_BIN, built here unless given,
# then copied into the run's directory), and what mtlsd was built from (MTLSD_COMMIT, MTLSD_TREE,
# MTLSD_SHA256: RESULTS.md names them).

# The commit and the state of the tracked files, as one line: HEAD, then a digest of their
# uncommitted changes ("" when there are none).
tree_fingerprint() {
    local head changes
    head=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return 0; }
    changes=$(git -C "$ROOT" diff --no-ext-diff HEAD -- 2>/dev/null || echo "cannot tell")
    if [[ -z "$changes" ]]; then
        echo "$head"
    else
        echo "$head $(printf '%s' "$changes" | sha256sum | cut -c1-12)"
    fi
}

# MTLSD_COMMIT and MTLSD_TREE (clean, dirty) of the sources as the build about to run reads them:
# read beside the build, not after the run (review: read at the end, they named edits made while
# the bench ran, not what the binary measured was built from). A tree that changed while the
# build ran is "changed during the build": which edits the binary has is then unknown.
record_tree_before_build() {
    TREE_BEFORE_BUILD=$(tree_fingerprint)
    read -r MTLSD_COMMIT _ <<<"$TREE_BEFORE_BUILD"
    MTLSD_TREE=clean
    [[ "$TREE_BEFORE_BUILD" == *" "* ]] && MTLSD_TREE=dirty
    [[ "$MTLSD_COMMIT" == unknown ]] && MTLSD_TREE=unknown
    return 0
}
check_tree_after_build() {
    [[ "$(tree_fingerprint)" == "$TREE_BEFORE_BUILD" ]] && return 0
    MTLSD_TREE="changed during the build"
    log "WARNING: the tree changed while mtlsd was built: RESULTS.md cannot say what it was built from"
}

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
        record_tree_before_build
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
        check_tree_after_build
    else
        # Built elsewhere, from sources this script never saw: the commit only when the caller
        # says it (MTLSD_BIN_COMMIT).
        MTLSD_COMMIT=${MTLSD_BIN_COMMIT:-"unknown (given binary)"}
        MTLSD_TREE="unknown (given binary)"
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

# After find_binaries, with the run's directory T made: copies the three binaries into $T/bin
# and points MTLSD_BIN, LOADGEN_BIN and IDLE_FLOOR_BIN at the copies, so every server start of
# the run execs the same file (review: build/release/mtlsd was re-read at each start of a ~21-
# minute run, and a concurrent run.sh --profile/--instructions or scripts/dev.sh could rebuild
# it meanwhile). MTLSD_SHA256, LOADGEN_SHA256, IDLE_FLOOR_SHA256: the first 12 hex digits of
# each copy's SHA-256. MTLSD_BIN_SOURCE: where mtlsd was copied from.
copy_binaries() {
    mkdir -p "$T/bin"
    MTLSD_BIN_SOURCE=$MTLSD_BIN
    cp -- "$MTLSD_BIN" "$T/bin/mtlsd"
    cp -- "$LOADGEN_BIN" "$T/bin/mtlsd_loadgen"
    cp -- "$IDLE_FLOOR_BIN" "$T/bin/mtlsd_idle_floor"
    MTLSD_BIN=$T/bin/mtlsd LOADGEN_BIN=$T/bin/mtlsd_loadgen IDLE_FLOOR_BIN=$T/bin/mtlsd_idle_floor
    MTLSD_SHA256=$(sha256sum "$MTLSD_BIN" | cut -c1-12)
    LOADGEN_SHA256=$(sha256sum "$LOADGEN_BIN" | cut -c1-12)
    IDLE_FLOOR_SHA256=$(sha256sum "$IDLE_FLOOR_BIN" | cut -c1-12)
    log "measuring copies in $T/bin: mtlsd sha256 $MTLSD_SHA256 (from $MTLSD_BIN_SOURCE)," \
        "mtlsd_loadgen $LOADGEN_SHA256, mtlsd_idle_floor $IDLE_FLOOR_SHA256"
}
