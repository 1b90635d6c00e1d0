#!/usr/bin/env bash
# check_dockerfile.sh [MTLSD_BINARY] — offline checks for docker/Dockerfile
# (there is no Docker engine here or in CI, so the image is never built).
#
#   1. `dockerfile-utils lint` (npm): zero problems — warnings count too (the
#      tool itself exits 0 on warnings, so its JSON output is counted), and a
#      negative fixture proves a warning is caught
#   2. the contract (dockerfile_facts.py): bookworm -> scratch, unit tests
#      and docker/rootfs.sh in the build stage, nothing else at run time, OCI
#      labels, numeric non-root USER, ENTRYPOINT, CMD, HEALTHCHECK as
#      promised; a negative fixture must break it
#   3. every package each stage's `apt-get install` names resolves on this
#      Debian 12 machine: `apt-get install -s --no-install-recommends`
#   4. the build stage installs exactly scripts/dev.sh's BUILD_PKGS plus the
#      image-only packages named below with their reasons (ca-certificates,
#      python3): a package missing either way fails, and negative copies (one
#      without libnghttp2-dev, one with curl added) must be refused
#   5. with a built binary (argument, else build/release/mtlsd, if present):
#      docker/rootfs.sh builds the image's file system from it (the runtime
#      stage is `scratch` + that); it must hold every DT_NEEDED library and
#      nothing beyond the binary's ldd closure and the CA bundle, OpenSSL's
#      default CA file must resolve in it, and under chroot as UID 65532
#      mtlsd must run (--version, check with a test PKI, the HEALTHCHECK
#      command), and as root image_live.py starts the daemon there (/proc and
#      /dev mounted, sandbox on): /readyz 200, HEALTHCHECK exit 0, SIGTERM exit 0
#
# Needs: node + npm (first run fills build/npm), python3, apt-get, dpkg,
# objdump (binutils), chroot (as root; else unshare -r). Exit 1 on any failure.
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

neg=$DEPLOY_TESTS/fixtures/Dockerfile.contract-bad
out=$("$PY" "$DEPLOY_TESTS/dockerfile_facts.py" "$neg" 2>&1)
rc=$?
unreported=0
while IFS= read -r line; do
    [[ -z $line ]] && continue
    grep -qF -- "$line" <<<"$out" || { fail "${neg#"$ROOT"/}: expected problem not reported: $line"; unreported=1; }
done <"$neg.expected"
if ((rc == 1 && unreported == 0)); then
    ok "${neg#"$ROOT"/} breaks the contract as expected ($(grep -c '^FAIL: ' <<<"$out") problem(s))"
else
    printf '%s\n' "$out"
    ((rc == 1)) || fail "${neg#"$ROOT"/}: dockerfile_facts.py exited $rc, expected 1"
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

# --- 4. the build stage = scripts/dev.sh's BUILD_PKGS (+ the image-only ones) --------
# Both directions: every package dev.sh installs for the C++ build must be in
# the build stage (CMakeLists.txt needs each; one missing breaks `docker build`
# and nothing else here would notice, as the image is never built), and the
# build stage installs nothing else but the packages below, which it needs
# too, each for its reason. Each of those must be one dev.sh installs too
# (RUN_PKGS), so the image is built with what a developer has.
declare -A IMAGE_ONLY=(
    [ca-certificates]="the trust store docker/rootfs.sh copies into the image"
    [python3]="ctest -L unit runs the lint.* and bench.* self-tests with /usr/bin/python3"
)
dev_array() { # NAME: the words of scripts/dev.sh's bash array NAME=( ... ), one a line
    "$PY" - "$1" scripts/dev.sh <<'EOF'
import re, shlex, sys
m = re.search(rf"^{sys.argv[1]}=\((.*?)\)", open(sys.argv[2], encoding="utf-8").read(), re.S | re.M)
print("\n".join(shlex.split(m.group(1), comments=True)) if m else "")
EOF
}
compare_build_pkgs() { # DOCKERFILE: one FAIL line per difference; exit 1 if any
    local df=$1 bad=0 p
    local -a dev stage
    mapfile -t dev < <(dev_array BUILD_PKGS | grep .)
    ((${#dev[@]} > 0)) || { echo "FAIL: no BUILD_PKGS=( ... ) array found in scripts/dev.sh"; return 1; }
    mapfile -t stage < <("$PY" "$DEPLOY_TESTS/dockerfile_facts.py" "$df" --packages | awk -F'\t' '$1 == "build" {print $2}')
    local all_dev
    all_dev=$(for a in BUILD_PKGS RUN_PKGS TEST_PKGS; do dev_array "$a"; done)
    for p in "${dev[@]}"; do
        printf '%s\n' "${stage[@]}" | grep -qxF -- "$p" ||
            { echo "FAIL: $df: build stage lacks '$p' (scripts/dev.sh BUILD_PKGS installs it for the C++ build)"; bad=1; }
    done
    for p in "${stage[@]}"; do
        printf '%s\n' "${dev[@]}" | grep -qxF -- "$p" && continue
        if [[ -z ${IMAGE_ONLY[$p]:-} ]]; then
            echo "FAIL: $df: build stage installs '$p', which is not in scripts/dev.sh BUILD_PKGS (add it there, or to IMAGE_ONLY in check_dockerfile.sh with its reason)"
            bad=1
        elif ! grep -qxF -- "$p" <<<"$all_dev"; then
            echo "FAIL: $df: image-only package '$p' is not installed by scripts/dev.sh either"
            bad=1
        fi
    done
    for p in "${!IMAGE_ONLY[@]}"; do
        printf '%s\n' "${stage[@]}" | grep -qxF -- "$p" ||
            { echo "FAIL: $df: build stage lacks '$p', which the image build needs: ${IMAGE_ONLY[$p]}"; bad=1; }
    done
    ((bad == 0)) && echo "ok: $df: build stage = scripts/dev.sh BUILD_PKGS (${#dev[@]}) + $(printf '%s ' "${!IMAGE_ONLY[@]}")"
    return "$bad"
}
if [[ -f scripts/dev.sh ]]; then
    out=$(compare_build_pkgs "$DOCKERFILE")
    rc=$?
    printf '%s\n' "$out"
    ((rc == 0)) || fail "the build stage's packages differ from scripts/dev.sh BUILD_PKGS (above)"
    for p in "${!IMAGE_ONLY[@]}"; do say "   image-only $p: ${IMAGE_ONLY[$p]}"; done
    # Negative copies: the comparison must bite in both directions.
    neg=$(mktemp)
    refused() {  # refused SED-SCRIPT EXPECTED-MESSAGE WHAT: that copy of the Dockerfile must fail
        sed "$1" "$DOCKERFILE" >"$neg"
        if ! out=$(compare_build_pkgs "$neg") && grep -q "$2" <<<"$out"; then
            ok "a Dockerfile $3 is refused"
        else
            printf '%s\n' "$out"
            fail "a Dockerfile $3 was not refused"
        fi
    }
    refused '/^ *libnghttp2-dev \\$/d' "build stage lacks 'libnghttp2-dev'" \
        "without libnghttp2-dev (a BUILD_PKGS package missing from the build stage)"
    refused 's/^\( *\)python3 \\$/&\n\1curl \\/' "installs 'curl'" \
        "installing curl in the build stage (a package not in BUILD_PKGS)"
    rm -f "$neg"
else
    say "skip: scripts/dev.sh not present: build-stage list not compared"
fi

# --- 5. the runtime file system: built by docker/rootfs.sh, run under chroot --------
# The image is `scratch` + what docker/rootfs.sh collects in the build stage.
# The same script runs here on the host's build of the same Debian 12
# packages, and mtlsd is started from the result with chroot: a library the
# loader cannot find there would be missing from the image too.
if [[ -z $BINARY && -x build/release/mtlsd ]]; then BINARY=build/release/mtlsd; fi
if [[ -n $BINARY ]]; then
    need objdump "apt-get install binutils"
    need ldd "libc-bin"
    need chroot "coreutils"
    [[ -x $BINARY ]] || die "$BINARY: not an executable"
    TMP=$(mktemp -d)
    trap 'rm -rf -- "$TMP"' EXIT
    RFS=$TMP/rootfs
    if ! out=$(sh docker/rootfs.sh "$BINARY" "$RFS" 2>&1); then
        printf '%s\n' "$out"
        fail "docker/rootfs.sh $BINARY failed (above)"
    else
        # Every DT_NEEDED library is in the image, and every library in the
        # image is one the loader resolves for the binary (nothing extra).
        closure=$(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
        lacking=0
        for so in $(objdump -p "$BINARY" | awk '/NEEDED/ {print $2}'); do
            path=$(ldd "$BINARY" | awk -v so="$so" '$1 == so {print $3}')
            [[ -n $path && -f $RFS$path ]] || { fail "the image lacks $so (DT_NEEDED of $BINARY)"; lacking=1; }
        done
        extra=$(cd "$RFS" && find . \( -type f -o -type l \) | sed 's#^\.##' | grep -vxF -f <(printf '%s\n' "$closure" /usr/bin/mtlsd \
            /etc/ssl/certs/ca-certificates.crt /usr/lib/ssl/cert.pem /usr/lib/ssl/certs) || true)
        if [[ -n $extra ]]; then
            fail "the image has files beyond the binary, its ldd closure and the CA bundle: $(tr '\n' ' ' <<<"$extra")"
        elif ((lacking == 0)); then
            ok "image file system = mtlsd + its ldd closure ($(wc -l <<<"$closure") files, $(du -sh "$RFS" | cut -f1) with this build) + CA bundle; no shell"
        fi
        [[ -e $RFS/bin/sh || -e $RFS/usr/bin/sh ]] && fail "the image has a shell"
        # OpenSSL's default trust file (what SSL_CTX_set_default_verify_paths
        # opens for `server_auth.ca: []`) resolves inside the image.
        cafile=$("$PY" -c 'import ssl; print(ssl.get_default_verify_paths().openssl_cafile)')
        target=$(readlink "$RFS$cafile" || echo "$cafile")
        [[ $target == /* ]] || target=$(dirname "$cafile")/$target
        n=$(grep -c 'BEGIN CERTIFICATE' "$RFS$target" 2>/dev/null || echo 0)
        if ((n > 0)); then
            ok "OpenSSL's default CA file $cafile -> $target holds $n certificates in the image"
        else
            fail "OpenSSL's default CA file $cafile does not resolve to a CA bundle in the image"
        fi
        # Run it there, as the image's USER (65532) so that a file only root
        # could read would show. chroot needs root (CI is); else a user
        # namespace, where only the caller's own UID exists.
        CHROOT=(chroot --userspec=65532:65532)
        ((EUID == 0)) || CHROOT=(unshare -r chroot)
        if ! ver=$("${CHROOT[@]}" "$RFS" /usr/bin/mtlsd --version 2>&1); then
            printf '%s\n' "$ver"
            fail "mtlsd --version does not run in the image file system (chroot; above)"
        else
            ok "mtlsd runs from the image file system: $(head -1 <<<"$ver")"
            bash scripts/gen-pki.sh "$TMP/pki" >/dev/null || die "scripts/gen-pki.sh failed"
            mkdir -p "$RFS/etc/mtlsd"
            cp "$TMP"/pki/{server.crt,server.key,client.crt,client.key,ca.crt} "$RFS/etc/mtlsd/"
            # As Kubernetes mounts them (fsGroup 65532, mode 0440).
            chmod 0440 "$RFS"/etc/mtlsd/*
            ((EUID == 0)) && chown -R 0:65532 "$RFS/etc/mtlsd"
            cat >"$RFS/etc/mtlsd/mtlsd.yaml" <<'CFG'
listeners:
  - name: inbound
    listen: 127.0.0.1:8443
    upstream: 127.0.0.1:8080
    tls: {cert: /etc/mtlsd/server.crt, key: /etc/mtlsd/server.key}
    client_auth: {ca: [/etc/mtlsd/ca.crt]}
  - name: outbound
    mode: client
    listen: 127.0.0.1:9443
    upstream: 127.0.0.1:443
    tls: {cert: /etc/mtlsd/client.crt, key: /etc/mtlsd/client.key}
    server_auth: {ca: [], server_name: example.org}
CFG
            if out=$("${CHROOT[@]}" "$RFS" /usr/bin/mtlsd check --config /etc/mtlsd/mtlsd.yaml 2>&1); then
                ok "in the image file system: mtlsd check loads certificates, key and CA files ($out)"
            else
                printf '%s\n' "$out"
                fail "mtlsd check fails in the image file system (above)"
            fi
            # The HEALTHCHECK command itself, against a port nothing serves:
            # it must run without a shell and say no (exit 1), not crash.
            "${CHROOT[@]}" "$RFS" /usr/bin/mtlsd health --url http://127.0.0.1:1/readyz --timeout 2s >"$TMP/health" 2>&1
            rc=$?
            if ((rc == 1)); then
                ok "in the image file system: the HEALTHCHECK command runs and reports an unreachable admin port (exit 1)"
            else
                cat "$TMP/health"
                fail "mtlsd health in the image file system exited $rc, expected 1 for an unreachable port"
            fi
            # The daemon itself, as a runtime starts it: /proc and /dev
            # mounted, UID 65532, sandbox on (needs root for the mounts).
            if ((EUID == 0)); then
                cat >"$RFS/etc/mtlsd/live.yaml" <<'CFG'
admin:
  address: 127.0.0.1:0
listeners:
  - name: inbound
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9
    tls: {cert: /etc/mtlsd/server.crt, key: /etc/mtlsd/server.key}
    client_auth: {ca: [/etc/mtlsd/ca.crt]}
CFG
                out=$(timeout 120 "$PY" "$DEPLOY_TESTS/image_live.py" "$RFS" /etc/mtlsd/live.yaml 2>&1) ||
                    fail "the daemon does not run from the image file system (above)"
                printf '%s\n' "$out"
            else
                say "skip: not root: the daemon was not started from the image file system (needs mounts)"
            fi
        fi
    fi
else
    say "skip: no mtlsd binary (pass one, or build build/release/mtlsd): the image file system was not built and run"
fi

finish check_dockerfile
