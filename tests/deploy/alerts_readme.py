#!/usr/bin/python3
"""deploy/README.md documents every alert of deploy/prometheus/alerts.yaml.

  alerts_readme.py [README] [RULES]     (defaults: deploy/README.md, deploy/prometheus/alerts.yaml)

- the table of the "## Alert rules" section has one row per alert of the rules
  file and none for an alert that is not there, with the rule's severity label,
  naming every mtlsd_* metric its expression reads and its `for:` duration
  ("for 15 m"; a rule without one: no "for N m" in its row);
- the file table's row for `prometheus/alerts.yaml` names the topic of each
  rule group (mtlsd-upstream -> "upstream", mtlsd-certificates -> "certificate").
Exit 1 with one FAIL line per problem.
"""
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parents[2]
readme = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "deploy/README.md"
rules_file = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else root / "deploy/prometheus/alerts.yaml"
text = readme.read_text(encoding="utf-8")
groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
rules = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
problems = []

m = re.search(r"^## Alert rules\n(.*?)(?=^## )", text, re.S | re.M)
if not m:
    problems.append(f"{readme}: no '## Alert rules' section")
    table = {}
else:
    table = {}
    for name, rest in re.findall(r"^\|\s*`(\w+)`\s*\|(.*)\|\s*$", m.group(1), re.M):
        when, _, severity = rest.rpartition("|")
        table[name] = (when, severity.strip())
for name, rule in rules.items():
    if name not in table:
        problems.append(f"{readme}: alert {name} ({rules_file.name}) is not in the Alert rules table")
        continue
    when, severity = table[name]
    want = (rule.get("labels") or {}).get("severity", "")
    if severity != want:
        problems.append(f"{readme}: alert {name} has severity {severity!r} in the table, {want!r} in {rules_file.name}")
    for metric in sorted(set(re.findall(r"\bmtlsd_[a-z0-9_]+", rule["expr"]))):
        if metric not in when:
            problems.append(f"{readme}: the row of {name} does not name {metric}, which its expression reads")
    dur = re.fullmatch(r"(\d+)([smh])", str(rule.get("for", "")))
    said = re.findall(r"\bfor (\d+) ?([smh])\b", when)
    if dur and (dur.group(1), dur.group(2)) not in said:
        problems.append(f"{readme}: the row of {name} does not say 'for {dur.group(1)} {dur.group(2)}' (its for: {rule['for']})")
    if not dur and said:
        problems.append(f"{readme}: the row of {name} says 'for {' '.join(said[0])}', but the rule has no for:")
for name in table:
    if name not in rules:
        problems.append(f"{readme}: the Alert rules table lists {name}, which {rules_file.name} does not define")

row = re.search(r"^\|\s*`prometheus/alerts\.yaml`\s*\|(.*)\|\s*$", text, re.M)
if not row:
    problems.append(f"{readme}: the file table has no row for `prometheus/alerts.yaml`")
else:
    for g in groups:
        topic = g["name"].removeprefix("mtlsd-").rstrip("s")
        if topic.lower() not in row.group(1).lower():
            problems.append(f"{readme}: the file table's row for prometheus/alerts.yaml does not mention {topic!r} (rule group {g['name']})")

for p in problems:
    print(f"FAIL: {p}")
if problems:
    sys.exit(1)
print(f"ok: {readme.name}: the Alert rules table names all {len(rules)} alerts of {rules_file.name} with their severity, "
      f"and the file table each of its {len(groups)} rule groups")
