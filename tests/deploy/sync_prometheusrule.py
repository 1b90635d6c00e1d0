#!/usr/bin/python3
"""Keep deploy/kubernetes/prometheusrule.yaml in step with deploy/prometheus/alerts.yaml.

The Prometheus Operator wants the rule groups wrapped in a PrometheusRule
object; plain Prometheus wants them as a rule file. alerts.yaml is the source:
this script re-indents its `groups:` block (comments included) under
`spec.groups` of a PrometheusRule.

  sync_prometheusrule.py           rewrite prometheusrule.yaml
  sync_prometheusrule.py --check   exit 1 (and show a diff) if it is out of date
"""
import difflib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy/prometheus/alerts.yaml"
TARGET = ROOT / "deploy/kubernetes/prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by
# tests/deploy/sync_prometheusrule.py — edit alerts.yaml and re-run it;
# tests/deploy/check_manifests.sh fails when this file is out of date.
#
# The mtlsd alert rules for the Prometheus Operator. `release: prometheus` is
# the label kube-prometheus-stack's ruleSelector matches by default.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mtlsd
  namespace: monitoring
  labels:
    release: prometheus
    app.kubernetes.io/component: mtlsd
spec:
  groups:
"""


def render() -> str:
    lines = SOURCE.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index("groups:") + 1
    except ValueError:
        sys.exit(f"{SOURCE}: no top-level 'groups:' line")
    body = []
    for line in lines[start:]:
        if line and not line.startswith((" ", "#")):
            sys.exit(f"{SOURCE}: unexpected top-level line after groups: {line!r}")
        body.append(("  " + line) if line.strip() else "")
    while body and not body[-1]:
        body.pop()
    return HEADER + "\n".join(body) + "\n"


def main() -> int:
    want = render()
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        have = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if have == want:
            print(f"ok: {TARGET.relative_to(ROOT)} matches {SOURCE.relative_to(ROOT)}")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            have.splitlines(True), want.splitlines(True),
            str(TARGET.relative_to(ROOT)), "expected (from alerts.yaml)"))
        print(f"FAIL: {TARGET.relative_to(ROOT)} is out of date: run {sys.argv[0]}")
        return 1
    TARGET.write_text(want, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
