#!/usr/bin/env bash
# run_all.sh [MTLSD_BINARY] — every deployment check, each in its own process,
# with a closing "N passed, N failed" line. Exit 1 if any failed.
# check_configs.sh, check_live.sh and check_kit.sh need a built mtlsd; without one they fail
# (exit 2): an unchecked config is not a pass.
set -uo pipefail
dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
passed=0 failed=0 failed_names=()
for check in check_manifests check_alerts check_dockerfile check_systemd check_configs check_live check_kit; do
    printf '=== %s\n' "$check"
    if "$dir/$check.sh" "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names+=("$check")
    fi
done
((failed == 0)) || printf 'failed: %s\n' "${failed_names[*]}"
printf 'deploy: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
