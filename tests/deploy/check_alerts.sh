#!/usr/bin/env bash
# check_alerts.sh — the Prometheus alert rules (issue 3):
#   promtool check rules deploy/prometheus/alerts.yaml      (syntax, PromQL, templates)
#   promtool test rules  tests/deploy/alerts_test.yaml      (each alert fires, with the
#       expected labels and rendered annotations, on synthetic mtlsd series;
#       and stays quiet where it must)
# Needs: promtool (Debian package `prometheus`).
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
finish check_alerts
