#!/usr/bin/env bash
# The two commands a new developer needs (see README):
#   scripts/dev.sh run    install what is missing, build Release, make a dev PKI, start a demo
#                         upstream and mtlsd (config/dev.yaml), show an admitted and a refused
#                         client; keeps running until Ctrl-C when attached to a terminal
#   scripts/dev.sh test   install what is missing, build, run every test (unit, integration,
#                         deployment checks) through ctest
# Also: scripts/dev.sh test --asan   the same suite on an AddressSanitizer+UBSan build
#       scripts/dev.sh test --tsan   unit tests + the multi-worker integration files under TSan
#       scripts/dev.sh fuzz [SECONDS]   build the libFuzzer targets (clang) and run each for
#                                       SECONDS (default 60); fails on any crash, leak or timeout
#       scripts/dev.sh build [PRESET] / deps
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Debian 12 packages. Boost is the versioned 1.81 package: the unversioned libboost-dev is 1.74,
# whose Asio lacks the coroutine operators mtlsd uses.
BUILD_PKGS=(g++ cmake ninja-build pkg-config libboost1.81-dev libssl-dev libyaml-cpp-dev
            libspdlog-dev libfmt-dev prometheus-cpp-dev libgtest-dev libgmock-dev libsystemd-dev
            libc-ares-dev libseccomp-dev libcli11-dev libp11-dev libgrpc++-dev libprotobuf-dev
            protobuf-compiler protobuf-compiler-grpc libnghttp2-dev lld)
RUN_PKGS=(openssl curl python3 ca-certificates libp11-3 p11-kit-modules libgrpc++1.51 libprotobuf32 libnghttp2-14)
# python3-grpcio + python3-grpc-tools: the test suite's SPIFFE Workload API server.
# libnginx-mod-stream: bench/run.sh (nginx stream, the layer-4 peer; --flood: limit_conn).
# nghttp2-client/-server: nghttp, h2load and nghttpd for the HTTP/2 tests and bench/h2.sh.
# linux-perf: bench/run.sh --profile (perf record -g on mtlsd); valgrind: --instructions.
TEST_PKGS=(python3-pytest python3-yaml python3-openssl prometheus nginx-light yamllint systemd binutils
           softhsm2 python3-grpcio python3-grpc-tools haproxy libnginx-mod-stream
           nghttp2-client nghttp2-server linux-perf python3-h2 valgrind)
# libFuzzer targets (fuzz/): Debian's clang 14 with its sanitizer and libFuzzer runtimes.
FUZZ_PKGS=(clang-14 libclang-rt-14-dev libfuzzer-14-dev)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  say "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# MTLSD_UNITY=ON (set by .ci/run): the dev and release presets too compile in batches of files,
# as the one-shot presets always do (CMakeLists.txt): a from-scratch build in about half the
# time, at the cost of an edit recompiling its whole batch. Unset, dev and release go back to
# one file at a time, even in a build directory a CI run left batched.
build() {
  local preset=$1 unity=()
  shift
  case $preset in
    dev | release) unity=("-DMTLSD_UNITY=${MTLSD_UNITY:-OFF}") ;;
  esac
  say "building ($preset)"
  cmake --preset "$preset" "${unity[@]}" >/dev/null
  cmake --build --preset "$preset" -j"$(nproc)" "$@"
}

# Background processes of `run`, stopped on any exit (globals: a trap runs after the function
# that set them has returned).
MTLSD_PID=""
UPSTREAM_PID=""
cleanup() {
  [[ -n $MTLSD_PID ]] && kill "$MTLSD_PID" 2>/dev/null && wait "$MTLSD_PID" 2>/dev/null
  [[ -n $UPSTREAM_PID ]] && kill "$UPSTREAM_PID" 2>/dev/null
  return 0
}
trap cleanup EXIT

wait_until() {  # wait_until DESCRIPTION COMMAND...: up to 10 s
  local what=$1
  shift
  for _ in $(seq 100); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "dev.sh: $what did not come up within 10 s" >&2
  return 1
}

cmd_run() {
  install_missing "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}"
  build release --target mtlsd
  local bin="$ROOT/build/release/mtlsd" dev="$ROOT/.dev"
  mkdir -p "$dev"
  say "making a dev PKI in .dev/pki (git-ignored)"
  "$ROOT/scripts/gen-pki.sh" "$dev/pki"
  "$bin" check --config "$ROOT/config/dev.yaml"

  say "starting the demo upstream on 127.0.0.1:8080 and mtlsd on 127.0.0.1:8443"
  mkdir -p "$dev/www"
  echo "hello from the demo upstream: you were admitted by mtlsd" >"$dev/www/index.html"
  python3 -m http.server 8080 --bind 127.0.0.1 --directory "$dev/www" >"$dev/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  wait_until "the demo upstream on 127.0.0.1:8080" curl -sf http://127.0.0.1:8080/
  "$bin" run --config "$ROOT/config/dev.yaml" 2>"$dev/mtlsd.log" &
  MTLSD_PID=$!
  if ! wait_until "mtlsd" grep -q 'info ready\|"msg":"ready"' "$dev/mtlsd.log"; then
    cat "$dev/mtlsd.log" >&2
    exit 1
  fi

  local pki="$dev/pki"
  say "an admitted client (certificate from the trusted CA, SPIFFE ID on the allow list):"
  echo "\$ curl --cert client.crt --key client.key --cacert ca.crt https://localhost:8443/"
  curl -sS --cert "$pki/client.crt" --key "$pki/client.key" --cacert "$pki/ca.crt" https://localhost:8443/
  say "a refused client (certificate from another CA):"
  echo "\$ curl --cert client-other.crt --key client-other.key --cacert ca.crt https://localhost:8443/"
  curl -sS --cert "$pki/client-other.crt" --key "$pki/client-other.key" --cacert "$pki/ca.crt" \
    https://localhost:8443/ || true
  say "what mtlsd logged (access log):"
  grep 'access' "$dev/mtlsd.log" | tail -n 2
  say "metrics: curl -s http://127.0.0.1:9901/metrics | grep mtlsd_handshake_failures_total"
  curl -s http://127.0.0.1:9901/metrics | grep -E '^mtlsd_(connections_total|handshake_failures_total\{.*unknown_ca)' || true

  if [[ -t 0 ]]; then
    say "mtlsd is running on https://localhost:8443 (admin http://127.0.0.1:9901). Ctrl-C stops it."
    say "logs: .dev/mtlsd.log   PKI: .dev/pki"
    wait "$MTLSD_PID"
  fi
}

# Node.js for the offline manifest and Dockerfile checks. Many machines carry NodeSource's nodejs,
# which bundles npm and conflicts with Debian's npm package: only install Debian's when absent.
install_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  install_missing nodejs npm
}

# The integration files that drive several workers at once: reload under load, revocation
# events reaching every worker, drain. Under TSan (slow) only these run.
TSAN_INTEGRATION='integration\.(test_reload|test_revocation_recheck|test_shutdown)$'

cmd_test() {
  local preset=dev
  [[ ${1:-} == --asan ]] && preset=asan
  [[ ${1:-} == --tsan ]] && preset=tsan
  install_missing "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${TEST_PKGS[@]}"
  install_node
  # A sanitizer report fails the run: LeakSanitizer at exit, TSan at the first race (the
  # integration harness also fails a test whose daemon printed a report). tsan.supp lists
  # the suppressions, each with its reason.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$ROOT/tsan.supp}
  build "$preset"
  if [[ $preset == tsan ]]; then
    say "running the unit tests and the multi-worker integration files (tsan)"
    ctest --preset tsan -L unit -j"$(nproc)"
    ctest --preset tsan -R "$TSAN_INTEGRATION"
    return
  fi
  say "running the test suite ($preset)"
  # Unit tests (and the layering check, scripts/check_layers.py) in parallel; integration
  # files several at a time (they share one read-only test PKI and no port:
  # tests/integration.cmake; a file marked RUN_SERIAL runs alone); the deployment checks one at
  # a time. Most integration time is waiting (timeouts, expiries, backoff): four files at once
  # on two cores still left the CPUs idle 39% of the time and took 280 s, not 430. A sanitized
  # daemon is several times slower, but its files wait as much: on a quiet two-core machine,
  # five at a time took 441 s where three took 517 (two at a time was CI's longest phase,
  # 586 s); but five sanitized daemons at once pushed test_admin's 64 stalled scrapers past
  # their bound in one run of .ci/run, so four. The longest files start first (COST,
  # tests/integration.cmake), so none of them begins near the end.
  local integration_jobs=5
  [[ $preset == asan ]] && integration_jobs=4
  ctest --preset "$preset" -L unit -j"$(nproc)"
  ctest --preset "$preset" -L integration -j"$integration_jobs"
  if [[ $preset == asan ]]; then
    # Under a sanitizer, the deployment checks that run the binary; the others read files only
    # and ran in the dev suite.
    ctest --preset asan -R '^deploy\.(systemd|configs|live)$'
  else
    ctest --preset "$preset" -LE 'unit|integration'
  fi
}

# One libFuzzer target for SECONDS; its output goes to build/fuzz/TARGET.log.
fuzz_one() {
  local t=$1 seconds=$2 out="$ROOT/build/fuzz"
  # New inputs go to build/fuzz/corpus (scratch); the committed seeds are read only.
  mkdir -p "$out/corpus/$t" "$out/artifacts"
  (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "$out/fuzz/$t" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t-" "$out/corpus/$t" "$ROOT/fuzz/corpus/$t" \
    >"$out/$t.log" 2>&1)
}

cmd_fuzz() {
  local seconds=${1:-60}
  install_missing "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}"
  build fuzz --target fuzz_all
  # One target per core at a time (each is one process): the slice per target is unchanged and
  # the phase takes half the time on two cores.
  local out="$ROOT/build/fuzz" failed=() targets=() pids=() jobs
  jobs=$(nproc)
  for src in "$ROOT"/fuzz/*_fuzz.cpp; do
    targets+=("$(basename "$src" .cpp)")
  done
  local i
  for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    local batch=("${targets[@]:i:jobs}") t
    pids=()
    for t in "${batch[@]}"; do
      say "fuzzing $t for ${seconds}s"
      fuzz_one "$t" "$seconds" &
      pids+=($!)
    done
    local k
    for k in "${!batch[@]}"; do
      t=${batch[k]}
      if ! wait "${pids[k]}"; then
        tail -n 60 "$out/$t.log" >&2
        failed+=("$t")
      else
        grep -E '^stat::number_of_executed_units' "$out/$t.log" | sed "s/^/$t: /" || true
      fi
    done
  done
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "dev.sh fuzz: failed: ${failed[*]} (inputs in build/fuzz/artifacts; logs in build/fuzz/*.log)" >&2
    return 1
  fi
  say "fuzzing: no crash, leak or timeout in ${seconds}s per target"
}

case ${1:-} in
  run) cmd_run ;;
  test) shift; cmd_test "$@" ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  build) install_missing "${BUILD_PKGS[@]}"; build "${2:-dev}" ;;
  deps) install_missing "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${TEST_PKGS[@]}" "${FUZZ_PKGS[@]}"; install_node ;;
  *) echo "usage: scripts/dev.sh run | test [--asan|--tsan] | fuzz [SECONDS] | build [PRESET] | deps" >&2; exit 2 ;;
esac
