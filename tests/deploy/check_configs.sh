#!/usr/bin/env bash
# check_configs.sh [MTLSD_BINARY] — every mtlsd config shipped in deploy/ and
# config/ passes `mtlsd check`, with the test PKI at the paths they name.
#
#   scripts/gen-pki.sh TMP/pki
#   tests/deploy/extract_configs.py --pki TMP/pki --out TMP/configs --mtlsd BINARY
#
# BINARY defaults to build/release/mtlsd, then build/dev/mtlsd. Without a
# binary this exits 2: configs that were never checked are not a pass.
# Needs: bash, openssl (gen-pki.sh), python3 + python3-yaml.
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
    say "FAIL: no mtlsd binary (pass one, or cmake --build --preset release): configs not checked"
    exit 2
fi
[[ -f scripts/gen-pki.sh ]] || die "scripts/gen-pki.sh not found"

TMP=$(mktemp -d)
trap 'rm -rf -- "$TMP"' EXIT
bash scripts/gen-pki.sh "$TMP/pki" >/dev/null || die "scripts/gen-pki.sh failed"
"$PY" "$DEPLOY_TESTS/extract_configs.py" --pki "$TMP/pki" --out "$TMP/configs" --mtlsd "$BIN" ||
    fail "mtlsd check rejected a shipped config (above)"
finish check_configs
