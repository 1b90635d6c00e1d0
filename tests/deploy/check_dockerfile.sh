#!/usr/bin/env bash
# check_dockerfile.sh [MTLSD_BINARY] — offline checks for docker/Dockerfile
# (there is no Docker engine here or in CI, so the image is never built).
#
#   1. `dockerfile-utils lint` (npm): zero problems — warnings count too (the
#      tool itself exits 0 on warnings, so its JSON output is counted), and a
#      negative fixture proves a warning is caught
#   2. the contract (dockerfile_facts.py): bookworm -> bookworm-slim, unit
#      tests run in the build stage, numeric non-root USER, ENTRYPOINT, CMD,
#      HEALTHCHECK as promised, no -dev package or compiler at run time
#   3. every package each stage's `apt-get install` names resolves on this
#      Debian 12 machine: `apt-get install -s --no-install-recommends`
#   4. the build stage installs everything scripts/dev.sh does for building
#      (when dev.sh exists) — "same packages as the developer set-up"
#   5. with a built binary (argument, else build/release/mtlsd, if present):
#      every shared library it links (DT_NEEDED) comes from a package the
#      runtime stage installs or that debian:bookworm-slim already has
#
# Needs: node + npm (first run fills build/npm), python3, apt-get, dpkg,
# objdump (binutils). Exit 1 on any failure.
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

DOCKERFILE=${MTLSD_DOCKERFILE:-docker/Dockerfile}
BINARY=${1:-}
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

[[ -f $DOCKERFILE ]] || die "$DOCKERFILE not found"
need apt-get "Debian's apt"
need dpkg "Debian's dpkg"

# --- 1. dockerfile-utils lint ----------------------------------------------------
ensure_npm
LINT=$NPM_DIR/node_modules/.bin/dockerfile-utils
lint_count() { # FILE -> number of diagnostics (errors + warnings)
    "$LINT" lint --json "$1" | node -e \
        'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).length))'
}
n=$(lint_count "$DOCKERFILE") || n=error
if [[ $n == 0 ]]; then
    ok "dockerfile-utils lint $DOCKERFILE: 0 problems"
else
    "$LINT" lint "$DOCKERFILE"
    fail "dockerfile-utils lint $DOCKERFILE: $n problem(s) (above)"
fi
neg=$DEPLOY_TESTS/fixtures/Dockerfile.bad
n=$(lint_count "$neg") || n=error
if [[ $n =~ ^[0-9]+$ ]] && ((n > 0)); then
    ok "dockerfile-utils lint flags the negative fixture (${neg#"$ROOT"/}: $n problem(s))"
else
    fail "dockerfile-utils lint did not flag ${neg#"$ROOT"/} (got: $n)"
fi

# --- 2. the Dockerfile contract ---------------------------------------------------
if out=$("$PY" "$DEPLOY_TESTS/dockerfile_facts.py" "$DOCKERFILE"); then
    say "$out"
else
    say "$out"
    fail "$DOCKERFILE breaks the image contract (above)"
fi

# --- 3. apt packages resolve on bookworm ---------------------------------------------
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ $codename == bookworm ]] || fail "this machine is '$codename', not bookworm: apt resolution below proves nothing"
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    say "no apt package lists yet: apt-get update"
    apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed"
fi
mapfile -t PAIRS < <("$PY" "$DEPLOY_TESTS/dockerfile_facts.py" "$DOCKERFILE" --packages)
declare -A STAGE_PKGS=()
for pair in "${PAIRS[@]}"; do
    STAGE_PKGS[${pair%%$'\t'*}]+="${pair#*$'\t'} "
done
((${#STAGE_PKGS[@]} > 0)) || fail "no apt-get install found in $DOCKERFILE"
for stage in "${!STAGE_PKGS[@]}"; do
    read -ra pkgs <<<"${STAGE_PKGS[$stage]}"
    # All together (the set must be co-installable); only on failure each
    # name alone, for a precise message about the one that is wrong.
    if apt-get install -s --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
        versions=$(apt-cache policy "${pkgs[@]}" |
            awk '/^[^ ]/ {sub(":$", "", $1); p=$1} /Candidate:/ {printf "%s=%s ", p, $2}')
        ok "stage $stage: ${#pkgs[@]} package(s) resolve with apt-get install -s: $versions"
        continue
    fi
    bad=0
    for p in "${pkgs[@]}"; do
        if ! msg=$(apt-get install -s --no-install-recommends "$p" 2>&1); then
            fail "stage $stage: package '$p' does not resolve: $(grep -m1 '^E:' <<<"$msg")"
            bad=1
        fi
    done
    if ((bad == 0)); then
        apt-get install -s --no-install-recommends "${pkgs[@]}" 2>&1 | grep '^E:'
        fail "stage $stage: packages resolve alone but are not co-installable"
    fi
done

# --- 4. same build packages as scripts/dev.sh --------------------------------------
if [[ -f scripts/dev.sh ]]; then
    missing=()
    words=$(tr -s '[:space:]()"'\''=' '\n' <scripts/dev.sh)
    for p in ${STAGE_PKGS[build]:-}; do
        grep -qxF -- "$p" <<<"$words" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        fail "build-stage packages not in scripts/dev.sh: ${missing[*]}"
    else
        ok "every build-stage package is also installed by scripts/dev.sh"
    fi
else
    say "skip: scripts/dev.sh not present: build-stage list not compared"
fi

# --- 5. runtime stage covers the binary's shared libraries -------------------------
if [[ -z $BINARY && -x build/release/mtlsd ]]; then BINARY=build/release/mtlsd; fi
if [[ -n $BINARY ]]; then
    need objdump "apt-get install binutils"
    need ldd "libc-bin"
    [[ -x $BINARY ]] || die "$BINARY: not an executable"
    # Packages every debian:bookworm-slim image already has (Essential or
    # required by apt itself).
    BASE="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 libcrypt1 libsystemd0 libudev1 libgnutls30 libgcrypt20 libcap2 liblz4-1 libselinux1 libpcre2-8-0 libacl1 libattr1 libgpg-error0"
    runtime_pkgs=" ${STAGE_PKGS[runtime]:-} $BASE "
    needed=$(objdump -p "$BINARY" | awk '/NEEDED/ {print $2}')
    uncovered=0
    for so in $needed; do
        path=$(ldd "$BINARY" | awk -v so="$so" '$1 == so {print $3}')
        if [[ -z $path || ! -e $path ]]; then
            fail "$BINARY needs $so, which this machine cannot resolve"
            uncovered=1
            continue
        fi
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
        [[ -n $pkg ]] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
        if [[ -z $pkg ]]; then
            fail "$so ($path) belongs to no Debian package"
            uncovered=1
        elif [[ $runtime_pkgs != *" $pkg "* ]]; then
            fail "$BINARY needs $so from package $pkg, which the runtime stage does not install"
            uncovered=1
        fi
    done
    ((uncovered == 0)) && ok "runtime stage provides every DT_NEEDED library of $BINARY: $(tr '\n' ' ' <<<"$needed")"
    # The other direction is advice, not a failure: a library package that
    # nothing in the binary's (transitive) ldd closure loads is dead weight.
    loaded=$(ldd "$BINARY" | awk '$3 ~ /^\// {print $3}' | xargs -r readlink -f | sort -u)
    for p in ${STAGE_PKGS[runtime]:-}; do
        [[ $p == ca-certificates ]] && continue
        libs=$(dpkg -L "$p" 2>/dev/null | grep -E '\.so(\.|$)' | xargs -r readlink -f | sort -u)
        [[ -z $libs ]] && continue
        if [[ -z $(comm -12 <(printf '%s\n' "$libs") <(printf '%s\n' "$loaded")) ]]; then
            say "note: runtime package $p provides no library $BINARY loads (ldd): drop it unless something needs it at run time"
        fi
    done
else
    say "skip: no mtlsd binary (pass one, or build build/release/mtlsd): runtime libraries not compared with DT_NEEDED"
fi

finish check_dockerfile
