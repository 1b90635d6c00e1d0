#!/usr/bin/env bash
# check_alerts.sh — the Prometheus alert rules (issue 3):
#   promtool check rules deploy/prometheus/alerts.yaml      (syntax, PromQL, templates)
#   promtool test rules  tests/deploy/alerts_test.yaml      (each alert fires, with the
#       expected labels and rendered annotations, on synthetic mtlsd series;
#       and stays quiet where it must)
#   alerts_readme.py: deploy/README.md's Alert rules table names every alert
#       of the rules file (and no other), with its severity, the metrics its
#       expression reads and its `for`; the file table names every rule group.
#       A README copy without the MtlsdUpstreamDown row must fail it.
# Needs: promtool (Debian package `prometheus`), python3 + python3-yaml.
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1
need promtool "apt-get install prometheus"

if out=$(promtool check rules deploy/prometheus/alerts.yaml 2>&1); then
    ok "promtool check rules deploy/prometheus/alerts.yaml: $(grep -o '[0-9]* rules found' <<<"$out")"
else
    printf '%s\n' "$out"
    fail "promtool check rules deploy/prometheus/alerts.yaml"
fi
if out=$(promtool test rules tests/deploy/alerts_test.yaml 2>&1); then
    ok "promtool test rules tests/deploy/alerts_test.yaml: $(grep -c 'eval_time:' tests/deploy/alerts_test.yaml) alert assertions pass"
else
    printf '%s\n' "$out"
    fail "promtool test rules tests/deploy/alerts_test.yaml"
fi
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
if out=$("$PY" "$DEPLOY_TESTS/alerts_readme.py" 2>&1); then
    say "$out"
else
    printf '%s\n' "$out"
    fail "deploy/README.md's Alert rules table is out of step with deploy/prometheus/alerts.yaml (above)"
fi
neg=$(mktemp)
grep -v '^| `MtlsdUpstreamDown`' deploy/README.md >"$neg"
if ! out=$("$PY" "$DEPLOY_TESTS/alerts_readme.py" "$neg" 2>&1) && grep -q "alert MtlsdUpstreamDown (alerts.yaml) is not in the Alert rules table" <<<"$out"; then
    ok "alerts_readme.py refuses a README whose table lacks an alert (MtlsdUpstreamDown)"
else
    printf '%s\n' "$out"
    fail "alerts_readme.py did not refuse a README without the MtlsdUpstreamDown row"
fi
rm -f "$neg"
finish check_alerts
