#!/usr/bin/env bash
# check_live.sh [MTLSD_BINARY] — run mtlsd with every shipped config (on
# loopback, test PKI) and check what the deployment files rely on: READY=1 /
# RELOADING=1 / STOPPING=1 on NOTIFY_SOCKET (Type=notify unit), `mtlsd health`
# and the probe paths (HEALTHCHECK, Kubernetes probes), metrics lint-clean and
# carrying the labels the alert rules use, SIGTERM exit 0; each Deployment's
# config with a failing upstream_check: its startup probe's path 200, its
# readiness probe's 503. See check_live.py.
# BINARY defaults to build/release/mtlsd, then build/dev/mtlsd; exit 2 without one.
# Needs: openssl (gen-pki.sh), python3, promtool (optional, recommended).
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
BIN=${1:-}
if [[ -z $BIN ]]; then
    for b in build/release/mtlsd build/dev/mtlsd; do
        [[ -x $b ]] && BIN=$b && break
    done
fi
if [[ -z $BIN || ! -x $BIN ]]; then
    say "FAIL: no mtlsd binary (pass one, or cmake --build --preset release): nothing started"
    exit 2
fi
"$PY" "$DEPLOY_TESTS/check_live.py" --mtlsd "$BIN" || fail "a shipped config misbehaved at run time (above)"
finish check_live
