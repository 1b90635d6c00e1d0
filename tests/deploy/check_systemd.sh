#!/usr/bin/env bash
# check_systemd.sh [MTLSD_BINARY] — offline checks for deploy/systemd/.
#
#   1. `systemd-analyze verify` on mtlsd.service with every diagnostic treated
#      as an error (it exits 0 on unknown keys and bad values, so its output
#      is read). The unit is copied to a temp dir with /usr/bin/mtlsd in
#      Exec*= replaced by MTLSD_BINARY (absolute), or /bin/true when none is
#      given, because verify insists the binaries exist. A negative copy with
#      a typo'd key and a bad value must be flagged (the grep really bites).
#   2. `systemd-analyze security --offline=yes`: exposure score <= 2.0
#   3. consistency with deploy/systemd/mtlsd.yaml: ExecStart and ExecReload's
#      check use the same --config, TimeoutStopSec >= shutdown.drain_timeout
#      + 10s; a start that fails (exit 1) or a usage error (2) is not restarted
#      (RestartPreventExitStatus=), and no ExecStartPre runs `mtlsd check`,
#      whose failure would restart the unit anyway: each restart would spend a
#      PKCS#11 token's PIN try on a wrong PIN
#   4. mtlsd.sysusers.conf parses (`systemd-sysusers --dry-run` on an empty root)
#   5. the unit's lines for a file-backed PKCS#11 token (SoftHSM), which its
#      comment lists: the unit with them verifies clean and scores <= 2.0, runs
#      as a static User= (not DynamicUser) and has the tokendir the comment
#      names in ReadWritePaths= (ProtectSystem=strict makes it read-only, and
#      SoftHSM then fails logins with "General Error"); the sysusers snippet
#      with the user line parses; README.md's HSM section says the same
#   6. the comment above RuntimeDirectory= (for `listen: unix:` sockets) says
#      what clients of other users need: the listener key it names for the
#      socket file's mode, with its value, is one `mtlsd check` takes on a
#      unix listener (with a binary), and RuntimeDirectoryMode= for the
#      directory (a comment offered the directory for sockets only root could
#      use, under the unit's UMask=0077 and 0750 directory)
#
# Needs: systemd (systemd-analyze, systemd-sysusers), python3 + python3-yaml.
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

UNIT=deploy/systemd/mtlsd.service
CONFIG=deploy/systemd/mtlsd.yaml
SYSUSERS=deploy/systemd/mtlsd.sysusers.conf
MAX_EXPOSURE=2.0
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

need systemd-analyze "apt-get install systemd"
[[ -f $UNIT ]] || die "$UNIT not found"

BIN=/bin/true
if [[ -n ${1:-} ]]; then
    [[ -x $1 ]] || die "$1: not an executable"
    BIN=$(readlink -f -- "$1")
fi

TMP=$(mktemp -d)
trap 'rm -rf -- "$TMP"' EXIT
mkdir -p "$TMP/good" "$TMP/bad" "$TMP/root"
sed -E "/^Exec[A-Za-z]*=/ s#/usr/bin/mtlsd#${BIN}#g" "$UNIT" >"$TMP/good/mtlsd.service"

# verify UNITFILE -> prints diagnostics about that unit, returns 1 if any.
verify() {
    local out rc lines
    out=$(systemd-analyze verify "$1" 2>&1)
    rc=$?
    # Only lines about our unit: on some machines verify also grumbles about
    # unrelated installed units it loads as dependencies.
    lines=$(grep -F -e "$1" -e "mtlsd.service" <<<"$out")
    other=$(grep -v -F -e "$1" -e "mtlsd.service" <<<"$out" | grep -v '^$')
    [[ -n $other ]] && printf 'note (not about mtlsd.service): %s\n' "$other" >&2
    [[ -n $lines ]] && printf '%s\n' "$lines"
    [[ $rc -eq 0 && -z $lines ]]
}

# --- 1. verify -------------------------------------------------------------------
if out=$(verify "$TMP/good/mtlsd.service"); then
    ok "systemd-analyze verify $UNIT (Exec*=${BIN}): no diagnostics"
else
    printf '%s\n' "$out"
    fail "systemd-analyze verify $UNIT reported the problems above"
fi
sed -E -e 's/^ProtectSystem=.*/ProtectSystem=strcit/' -e 's/^NoNewPrivileges=(.*)/NoNewPrivilege=\1/' \
    "$TMP/good/mtlsd.service" >"$TMP/bad/mtlsd.service"
if out=$(verify "$TMP/bad/mtlsd.service"); then
    fail "negative test: verify did not flag a typo'd key and a bad value"
else
    n=$(grep -c . <<<"$out")
    if grep -q "NoNewPrivilege" <<<"$out" && grep -q "strcit" <<<"$out"; then
        ok "negative test: verify flags a typo'd key and a bad value ($n diagnostics)"
    else
        printf '%s\n' "$out"
        fail "negative test: verify output did not name both planted mistakes"
    fi
fi

# --- 2. security exposure ----------------------------------------------------------
sec=$(systemd-analyze security --offline=yes "$TMP/good/mtlsd.service" 2>&1)
score=$(sed -nE 's/.*Overall exposure level for mtlsd\.service: ([0-9.]+).*/\1/p' <<<"$sec")
if [[ -z $score ]]; then
    printf '%s\n' "$sec"
    fail "systemd-analyze security printed no exposure score"
elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    ok "systemd-analyze security --offline=yes: exposure $score (<= $MAX_EXPOSURE)"
    grep '✗' <<<"$sec" | sed -E 's/ {2,}/  /g; s/^/    remaining: /'
else
    grep '✗' <<<"$sec"
    fail "systemd-analyze security: exposure $score > $MAX_EXPOSURE (open items above)"
fi

# --- 3. unit <-> example config ------------------------------------------------------
if out=$("$PY" - "$UNIT" "$CONFIG" <<'EOF'
import re, sys
import yaml

unit_path, config_path = sys.argv[1], sys.argv[2]
unit = open(unit_path, encoding="utf-8").read()
keys = {}
for line in unit.splitlines():
    m = re.match(r"^([A-Za-z]+)=(.*)$", line)
    if m:
        keys.setdefault(m.group(1), []).append(m.group(2))
problems = []

def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|min|m|h)?", v.strip())
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "min": 60, "m": 60, "h": 3600}[m.group(2)]

configs = set()
for k in ("ExecStartPre", "ExecStart", "ExecReload"):
    for v in keys.get(k, []):
        if "/mtlsd " not in v:
            continue
        m = re.search(r"--config\s+(\S+)", v)
        if not m:
            problems.append(f"{k} has no --config")
        else:
            configs.add(m.group(1))
if len(configs) != 1:
    problems.append(f"ExecStart and ExecReload use different configs: {sorted(configs)}")
if any(" check " in v for v in keys.get("ExecStartPre", [])):
    problems.append("ExecStartPre runs `mtlsd check`: its failure restarts the unit whatever "
                    "RestartPreventExitStatus= says (a PIN try spent per restart)")
if not any(" check " in v for v in keys.get("ExecReload", [])):
    problems.append("ExecReload does not run `mtlsd check` before the SIGHUP")
prevent = " ".join(keys.get("RestartPreventExitStatus", [])).split()
if keys.get("Restart", ["no"])[-1] != "no" and not {"1", "2"} <= set(prevent):
    problems.append(f"RestartPreventExitStatus= must hold 1 and 2 (a start that failed, a "
                    f"usage error), got {prevent}")
if keys.get("Type") != ["notify"]:
    problems.append(f"Type must be notify, got {keys.get('Type')}")
if not any("kill -HUP $MAINPID" in v for v in keys.get("ExecReload", [])):
    problems.append("ExecReload must send SIGHUP to $MAINPID")
for k in ("CapabilityBoundingSet", "AmbientCapabilities"):
    if keys.get(k) != [""]:
        problems.append(f"{k}= must be empty (no capabilities), got {keys.get(k)}")
if keys.get("DynamicUser") != ["yes"]:
    problems.append("DynamicUser=yes expected")

cfg = yaml.safe_load(open(config_path, encoding="utf-8"))
drain = seconds(str(cfg.get("shutdown", {}).get("drain_timeout", "30s")))
stop = seconds(keys.get("TimeoutStopSec", ["90s"])[-1])
if drain is None or stop is None:
    problems.append("cannot parse drain_timeout / TimeoutStopSec")
elif stop < drain + 10:
    problems.append(f"TimeoutStopSec {stop}s < drain_timeout {drain}s + 10s: SIGKILL would cut the drain short")
path = next(iter(configs), "")
if not path.endswith("/" + config_path.rsplit("/", 1)[-1]):
    problems.append(f"the unit reads {path}, but the example config is {config_path}")
for p in problems:
    print(f"FAIL: {unit_path}: {p}")
if problems:
    sys.exit(1)
print(f"ok: {unit_path}: Type=notify, no restart after a failed start, check before reload, "
      f"SIGHUP reload, no capabilities, "
      f"TimeoutStopSec {stop:g}s >= drain_timeout {drain:g}s + 10s, --config {path}")
EOF
); then
    say "$out"
else
    say "$out"
    fail "$UNIT is inconsistent with $CONFIG (above)"
fi

# --- 4. sysusers snippet ------------------------------------------------------------
if command -v systemd-sysusers >/dev/null 2>&1; then
    if out=$(systemd-sysusers --root="$TMP/root" --dry-run "$ROOT/$SYSUSERS" 2>&1) &&
        ! grep -qiE 'fail|error|ignor' <<<"$out"; then
        ok "systemd-sysusers --dry-run $SYSUSERS: $(grep -m1 -i 'creating group' <<<"$out")"
    else
        printf '%s\n' "$out"
        fail "systemd-sysusers rejected $SYSUSERS"
    fi
else
    say "skip: systemd-sysusers not installed: $SYSUSERS not parsed"
fi

# --- 5. the SoftHSM variant the unit's comment gives ----------------------------------
# The `#   Key=value` lines right after "# So, with `u mtlsd -` ...", and the
# tokendir the comment names ("# /var/lib/softhsm/tokens on Debian) ...").
mapfile -t SOFTHSM < <(awk '/^# So, with `u mtlsd -`/ { on = 1; next }
    on && /^#   [A-Za-z]+=/ { print substr($0, 5); next } { on = 0 }' "$UNIT")
tokendir=$(sed -n 's#^\# \(/[^ ]*\) on Debian).*#\1#p' "$UNIT" | head -1)
if ((${#SOFTHSM[@]} == 0)) || [[ -z $tokendir ]]; then
    fail "$UNIT: no SoftHSM lines (after '# So, with \`u mtlsd -\`...') or no tokendir in its comment"
else
    mkdir -p "$TMP/softhsm"
    # The lines go after SupplementaryGroups=mtlsd-tls; DynamicUser=yes makes way for theirs.
    awk -v lines="$(printf '%s\n' "${SOFTHSM[@]}")" '/^DynamicUser=/ { next } { print } /^SupplementaryGroups=/ { print lines }' \
        "$TMP/good/mtlsd.service" >"$TMP/softhsm/mtlsd.service"
    problems=()
    grep -qx 'DynamicUser=no' "$TMP/softhsm/mtlsd.service" || problems+=("no DynamicUser=no")
    grep -qE '^User=[a-z]' "$TMP/softhsm/mtlsd.service" || problems+=("no static User=")
    grep -qx "ReadWritePaths=$tokendir" "$TMP/softhsm/mtlsd.service" || problems+=("no ReadWritePaths=$tokendir")
    if ! out=$(verify "$TMP/softhsm/mtlsd.service"); then
        printf '%s\n' "$out"
        problems+=("systemd-analyze verify reported the problems above")
    fi
    sec=$(systemd-analyze security --offline=yes "$TMP/softhsm/mtlsd.service" 2>&1)
    hsm_score=$(sed -nE 's/.*Overall exposure level for mtlsd\.service: ([0-9.]+).*/\1/p' <<<"$sec")
    awk -v s="${hsm_score:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' || problems+=("exposure ${hsm_score:-?} > $MAX_EXPOSURE")
    if command -v systemd-sysusers >/dev/null 2>&1; then
        { cat "$SYSUSERS"; printf 'u mtlsd -\n'; } >"$TMP/softhsm/sysusers.conf"
        out=$(systemd-sysusers --root="$TMP/root" --dry-run "$TMP/softhsm/sysusers.conf" 2>&1)
        grep -qi "creating user 'mtlsd'" <<<"$out" || problems+=("sysusers with 'u mtlsd -': $out")
    fi
    hsm=$("$PY" -c 'import re,sys; t=open(sys.argv[1]).read(); m=re.search(r"^### Keys in an HSM \(PKCS#11\)\n(.*?)^##", t, re.S | re.M); print(m.group(1) if m else "")' README.md)
    for want in "ReadWritePaths=" "General Error" "User=" "deploy/systemd"; do
        grep -qF -- "$want" <<<"$hsm" || problems+=("README.md's HSM section does not say $want")
    done
    if ((${#problems[@]} == 0)); then
        ok "SoftHSM variant (${SOFTHSM[*]}): verify clean, exposure $hsm_score, README's HSM section agrees"
    else
        fail "SoftHSM variant of $UNIT: $(printf '%s; ' "${problems[@]}")"
    fi
fi

# --- 6. unix sockets: what the comment above RuntimeDirectory= offers ------------------
block=$(awk '/^# \/run\/mtlsd, for `listen: unix:/ { on = 1 } on { print } /^RuntimeDirectory=/ { exit }' "$UNIT")
read -r mode_key mode_value < <(sed -n 's/.* \([a-z_]*_mode\): "\([0-7]*\)".*/\1 \2/p' <<<"$block" | head -1)
if [[ -z $block || -z ${mode_key:-} ]]; then
    fail "$UNIT: the comment above RuntimeDirectory= names no listener key for the socket file's mode (KEY: \"0666\")"
elif ! grep -q "RuntimeDirectoryMode=07[0-7]5" <<<"$block"; then
    fail "$UNIT: the comment above RuntimeDirectory= does not say how to make /run/mtlsd searchable (RuntimeDirectoryMode=0755)"
elif [[ $BIN == /bin/true ]]; then
    say "skip: no mtlsd binary: '$mode_key: \"$mode_value\"' (the unit's comment) not run through mtlsd check"
else
    mkdir -p "$TMP/unix"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ca -days 2 \
        -keyout "$TMP/unix/ca.key" -out "$TMP/unix/ca.crt" >/dev/null 2>&1
    cat >"$TMP/unix/mtlsd.yaml" <<EOF
admin:
  address: ""
listeners:
  - name: local
    mode: client
    listen: unix:$TMP/unix/app.sock
    $mode_key: "$mode_value"
    upstream: 127.0.0.1:8443
    server_auth:
      ca: [$TMP/unix/ca.crt]
EOF
    if out=$("$BIN" check --config "$TMP/unix/mtlsd.yaml" 2>&1); then
        ok "the unit's comment for unix sockets: '$mode_key: \"$mode_value\"' is a listener key mtlsd takes, and RuntimeDirectoryMode= for the directory"
    else
        printf '%s\n' "$out"
        fail "$UNIT: the comment above RuntimeDirectory= offers '$mode_key: \"$mode_value\"', which mtlsd check refuses (above)"
    fi
fi

finish check_systemd
