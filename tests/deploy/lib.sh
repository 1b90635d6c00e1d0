# Shared helpers for tests/deploy/check_*.sh (sourced, not run).
#
# ROOT        repository root
# NPM_DIR     where the pinned npm tools live (default build/npm; override with
#             MTLSD_NPM_DIR). Installed once from tests/deploy/package-lock.json
#             with `npm ci`, reinstalled only when the lock file changes, so
#             every later run is offline.

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
NPM_DIR=${MTLSD_NPM_DIR:-$ROOT/build/npm}
DEPLOY_TESTS=$ROOT/tests/deploy

FAILURES=0

say() { printf '%s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*"
    FAILURES=$((FAILURES + 1))
}
die() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
need() { # COMMAND PACKAGE-HINT
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (install: $2)"
}

# ensure_npm: install the pinned npm packages into $NPM_DIR unless the
# installed lock file is identical to ours.
ensure_npm() {
    need node "apt-get install nodejs"
    need npm "apt-get install npm"
    local lock=$DEPLOY_TESTS/package-lock.json
    if [[ -d $NPM_DIR/node_modules && -f $NPM_DIR/package-lock.json ]] &&
        cmp -s "$lock" "$NPM_DIR/package-lock.json" &&
        cmp -s "$DEPLOY_TESTS/package.json" "$NPM_DIR/package.json"; then
        return 0
    fi
    say "installing npm check tools into $NPM_DIR (once)"
    mkdir -p "$NPM_DIR"
    cp "$DEPLOY_TESTS/package.json" "$lock" "$NPM_DIR/"
    # engine-strict off: kubernetes-models declares node >= 22 but runs on
    # Debian's/NodeSource's node 20 (the checks below prove it).
    if ! (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false) >"$NPM_DIR/install.log" 2>&1; then
        cat "$NPM_DIR/install.log" >&2
        rm -f "$NPM_DIR/package-lock.json" # force a retry next time
        die "npm ci into $NPM_DIR failed"
    fi
}

# YAML files the lint covers: deploy/, config/ and this directory's own
# (alert tests, fixtures); sorted paths relative to ROOT. Helm templates are
# not YAML until rendered (check_kit.sh renders and checks them).
yaml_files() {
    (cd "$ROOT" && find deploy config tests/deploy -type f \( -name '*.yaml' -o -name '*.yml' \) \
        -not -path 'deploy/helm/*/templates/*' 2>/dev/null | LC_ALL=C sort)
}

# Kubernetes manifests: the YAML files under deploy/kubernetes/.
manifest_files() {
    (cd "$ROOT" && find deploy/kubernetes -type f \( -name '*.yaml' -o -name '*.yml' \) 2>/dev/null | LC_ALL=C sort)
}

finish() { # NAME
    if ((FAILURES > 0)); then
        say "$1: $FAILURES check(s) FAILED"
        exit 1
    fi
    say "$1: all checks passed"
}
