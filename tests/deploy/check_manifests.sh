#!/usr/bin/env bash
# check_manifests.sh — offline checks for the YAML in deploy/ and config/ and
# the Kubernetes manifests in deploy/kubernetes/.
#
#   1. yamllint -s (strict: warnings fail) with the repository's .yamllint
#   2. deploy/kubernetes/prometheusrule.yaml is in step with
#      deploy/prometheus/alerts.yaml (tests/deploy/sync_prometheusrule.py)
#   3. check_k8s.mjs on every manifest: kubernetes-models schema validation
#      (core, cert-manager, prometheus-operator models), unknown-key check,
#      mtlsd pod policy (hardening, probes, termination budget vs
#      drain_timeout, mounted files)
#   4. negative fixtures (tests/deploy/fixtures/bad-*.yaml): check_k8s.mjs
#      must reject each with every line its .expected file lists — proof that
#      the unknown-key and policy checks bite, not just pass
#   5. config_keys.py: every mtlsd config embedded in deploy/ and config/ uses
#      only keys and values of shared/interface.md (plus its negative fixture)
#
# Needs: yamllint, python3, node + npm (first run installs the pinned npm
# packages into build/npm; later runs are offline). Exit 1 on any failure.
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

need yamllint "apt-get install yamllint"
# Debian's python3 (with python3-yaml), not whatever python3 PATH finds first.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

# --- 1. yamllint ---------------------------------------------------------
mapfile -t YAML < <(yaml_files)
if ((${#YAML[@]} == 0)); then
    fail "no YAML files found under deploy/ or config/"
elif out=$(yamllint -s -f parsable .yamllint "${YAML[@]}" 2>&1); then
    ok "yamllint -s: ${#YAML[@]} file(s) clean (${YAML[*]})"
else
    printf '%s\n' "$out"
    fail "yamllint -s reported problems (above)"
fi

# --- 2. PrometheusRule in step with alerts.yaml ----------------------------
if out=$("$PY" "$DEPLOY_TESTS/sync_prometheusrule.py" --check 2>&1); then
    say "$out"
else
    printf '%s\n' "$out"
    fail "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/alerts.yaml"
fi

# --- 3. schema + unknown keys + policy ------------------------------------------
ensure_npm
# Node resolves ES module imports next to the importing file: run the checker
# from inside the npm directory.
cp "$DEPLOY_TESTS/check_k8s.mjs" "$NPM_DIR/check_k8s.mjs"
mapfile -t MANIFESTS < <(manifest_files)
if ((${#MANIFESTS[@]} == 0)); then
    fail "no manifests under deploy/kubernetes/"
elif out=$(node "$NPM_DIR/check_k8s.mjs" "${MANIFESTS[@]}" 2>&1); then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out"
    fail "check_k8s.mjs rejected deploy/kubernetes manifests (FAIL lines above)"
fi

# --- 4. negative fixtures ------------------------------------------------------
shopt -s nullglob
fixtures=("$DEPLOY_TESTS"/fixtures/bad-*.yaml)
((${#fixtures[@]} > 0)) || fail "no negative fixtures in tests/deploy/fixtures"
for fx in "${fixtures[@]}"; do
    rel=${fx#"$ROOT"/}
    expected=${fx%.yaml}.expected
    if [[ ! -f $expected ]]; then
        fail "$rel: missing ${expected#"$ROOT"/}"
        continue
    fi
    out=$(node "$NPM_DIR/check_k8s.mjs" "$fx" 2>&1)
    rc=$?
    if ((rc != 1)); then
        printf '%s\n' "$out"
        fail "$rel: check_k8s.mjs exited $rc, expected 1 (rejection)"
        continue
    fi
    missing=0
    while IFS= read -r line; do
        [[ -z $line ]] && continue
        if ! grep -qF -- "$line" <<<"$out"; then
            fail "$rel: expected rejection not reported: $line"
            missing=$((missing + 1))
        fi
    done <"$expected"
    # The unknown-key fixture must be accepted by the models' own schema
    # validation: otherwise it would not prove the extra check is needed.
    if [[ $fx == *unknown-keys* ]] && grep -q ': schema: ' <<<"$out"; then
        grep ': schema: ' <<<"$out"
        fail "$rel: should be schema-valid (only unknown keys wrong)"
        missing=$((missing + 1))
    fi
    if ((missing == 0)); then
        ok "$rel rejected as expected ($(grep -c '^FAIL: ' <<<"$out") problem(s), all $(grep -c . "$expected") expected ones reported)"
    else
        printf '%s\n' "$out"
    fi
done

# --- 5. embedded mtlsd configs against shared/interface.md ----------------------
# (mtlsd check on them needs the binary: check_configs.sh)
if out=$("$PY" "$DEPLOY_TESTS/config_keys.py" 2>&1); then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out"
    fail "an mtlsd config in deploy/ or config/ breaks shared/interface.md (above)"
fi
neg=$DEPLOY_TESTS/fixtures/mtlsd-bad-config.yaml
out=$("$PY" "$DEPLOY_TESTS/config_keys.py" "$neg" 2>&1)
rc=$?
missing=0
while IFS= read -r line; do
    [[ -z $line ]] && continue
    grep -qF -- "$line" <<<"$out" || { fail "${neg#"$ROOT"/}: expected problem not reported: $line"; missing=1; }
done <"${neg%.yaml}.expected"
if ((rc == 1 && missing == 0)); then
    ok "${neg#"$ROOT"/} rejected as expected ($(grep -c '^FAIL: ' <<<"$out") problem(s), with the expected lines)"
else
    printf '%s\n' "$out"
    ((rc == 1)) || fail "${neg#"$ROOT"/}: config_keys.py exited $rc, expected 1"
fi

finish check_manifests
