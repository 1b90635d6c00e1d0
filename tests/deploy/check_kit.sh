#!/usr/bin/env bash
# check_kit.sh [MTLSD_BINARY] — the rollout kit, rendered offline and checked:
#
#   1. render deploy/kustomize/example (the mtlsd-sidecar component on the
#      orders app) and the Helm chart deploy/helm/mtlsd-sidecar with
#      ci/orders-values.yaml (release orders, namespace shop), and both again
#      with the trust-manager bundle (example-trust-bundle,
#      ci/orders-trust-bundle-values.yaml), with render_kit.mjs (neither
#      kustomize nor helm installs here: see its header)
#      and the component on tests/deploy/fixtures/kit-app (an app with its own
#      init container, volumes, labels): check_kit.mjs keeps — all of the
#      app's own parts survive unchanged; and the chart with
#      ci/typed-values.yaml (numbers and booleans where strings are copied):
#      check_kit.mjs values — each renders as the string it stands for
#   2. check_k8s.mjs on each rendering: schema, unknown keys, mtlsd pod policy
#      (native sidecar, hardening/securityContext, probes of mtlsd and the
#      app, resources, grace period vs drain_timeout, mounted files)
#   3. check_kit.mjs same: each pair of renderings holds the same objects;
#      check_kit.mjs facts on each: sidecar + ConfigMap + Certificate (from a
#      ClusterIssuer, SPIFFE ID of the Deployment's namespace and service
#      account) + PodMonitor selecting the pod
#   4. negative cases: the chart without app.image must fail to render, a
#      rendering without the PodMonitor must fail the facts, the kustomize
#      renderer must refuse a feature it does not implement
#   5. config_keys.py on the rendered mtlsd configs, and with a binary (argument,
#      else build/release or build/dev) `mtlsd check` on each
#   6. README.md's worked example: its upstream serves a directory of its
#      own, not the one holding the PKI
#   7. two apps in one namespace: the orders example and a second app
#      (tests/deploy/fixtures/kit-second-app, payments in shop) rendered with
#      the component, and the chart as releases orders and payments in shop:
#      check_kit.mjs distinct — no object (ConfigMap, Certificate, its
#      Secret, PodMonitor, ...) in both, no PodMonitor selecting the other
#      app's pods; the renderings as the kit made them before its names were
#      per app (fixed names, PodMonitor on the sidecar label) must fail it
#   8. the kit's mtlsd.yaml against the hand-written
#      deploy/kubernetes/configmap.yaml (check_kit.mjs config): the orders
#      renderings agree in every key, the other apps in every key but their
#      allow list (http:, alpn, revocation, timeouts, ... included); a
#      rendering without http.forward_client_cert_details must fail it. The
#      orders renderings' Certificate against deploy/kubernetes/certificate.yaml
#      (check_kit.mjs certificate: dnsNames, uris, ...); one without the
#      dnsNames must fail it
#   9. with a kubectl whose built-in kustomize is v5 or later on PATH (or
#      $KUBECTL): `kubectl kustomize` on each kustomize directory of 1, and
#      check_kit.mjs identical against render_kit.mjs's rendering (values and
#      their types, list order); without one, a message says it was skipped
#
# Needs: node + npm (first run installs the pinned npm packages into
# build/npm), python3 + python3-yaml, openssl (gen-pki.sh). Exit 1 on failure.
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

BIN=${1:-}
if [[ -z $BIN ]]; then
    for b in build/release/mtlsd build/dev/mtlsd; do
        [[ -x $b ]] && BIN=$b && break
    done
fi

ensure_npm
for f in render_kit.mjs check_kit.mjs check_k8s.mjs; do cp "$DEPLOY_TESTS/$f" "$NPM_DIR/$f"; done
TMP=$(mktemp -d)
trap 'rm -rf -- "$TMP"' EXIT
CHART=deploy/helm/mtlsd-sidecar

# --- 1. render ---------------------------------------------------------------
# Two pairs, each a kustomize overlay and the chart with the values that
# should give the same objects: the orders example, and the same trusting
# the trust-manager overlap bundle.
mkdir -p "$TMP/root/deploy"
rendered=()
render_pair() { # NAME KUSTOMIZE_DIR VALUES_FILE...
    local name=$1 kdir=$2
    shift 2
    local k=$TMP/root/deploy/$name-kustomize.yaml h=$TMP/root/deploy/$name-helm.yaml fargs=() v both=1
    for v in "$@"; do fargs+=(-f "$v"); done
    if node "$NPM_DIR/render_kit.mjs" kustomize "$kdir" >"$k" 2>"$TMP/err"; then
        ok "rendered $kdir: $(grep -c '^kind:' "$k") object(s)"
        rendered+=("$k")
    else
        cat "$TMP/err"
        fail "render_kit.mjs kustomize $kdir failed (above)"
        both=0
    fi
    if node "$NPM_DIR/render_kit.mjs" helm "$CHART" --release orders --namespace shop "${fargs[@]}" >"$h" 2>"$TMP/err"; then
        ok "rendered $CHART (release orders, namespace shop, ${*##*/}): $(grep -c '^kind:' "$h") object(s)"
        rendered+=("$h")
    else
        cat "$TMP/err"
        fail "render_kit.mjs helm $CHART ${*##*/} failed (above)"
        both=0
    fi
    if ((both)); then
        out=$(node "$NPM_DIR/check_kit.mjs" same "$k" "$h" 2>&1) || fail "$name: kustomize and Helm render different objects (above)"
        printf '%s\n' "$out"
    fi
}
render_pair orders deploy/kustomize/example "$CHART/ci/orders-values.yaml"
render_pair orders-trust-bundle deploy/kustomize/example-trust-bundle "$CHART/ci/orders-values.yaml" \
    "$CHART/ci/orders-trust-bundle-values.yaml"

for r in "$TMP"/root/deploy/orders-trust-bundle-*.yaml; do
    if grep -qx '                  name: mesh-ca-bundle' "$r"; then
        ok "${r##*/}: the sidecar's ca.crt comes from the trust-manager ConfigMap mesh-ca-bundle"
    else
        fail "${r##*/}: the sidecar does not mount the ConfigMap mesh-ca-bundle"
    fi
done

# The component on an app with an init container, volumes and labels of its
# own: everything the app had stays, the sidecar is added.
F=$DEPLOY_TESTS/fixtures/kit-app
if node "$NPM_DIR/render_kit.mjs" kustomize "$F" >"$TMP/kit-app.yaml" 2>"$TMP/err"; then
    rendered+=("$TMP/kit-app.yaml")
    out=$(node "$NPM_DIR/check_kit.mjs" keeps "$F/app.yaml" "$TMP/kit-app.yaml" 2>&1) ||
        fail "the component changed the app's own parts (above)"
    printf '%s\n' "$out"
    # kustomize's strategic merge puts the patch's items first (deploy/README.md).
    if grep -qF 'initContainers [mtlsd, migrate]' <<<"$out"; then
        ok "the mtlsd init container comes before the app's own (kustomize's list order)"
    else
        fail "the mtlsd init container is not the first, before the app's migrate (kustomize's order)"
    fi
else
    cat "$TMP/err"
    fail "render_kit.mjs kustomize ${F#"$ROOT"/} failed (above)"
fi

# A second app in the orders example's namespace, with the component and with
# the chart (tests/deploy/fixtures/kit-second-app): checked like the others
# below, and against the orders renderings in 7.
F2=$DEPLOY_TESTS/fixtures/kit-second-app
if node "$NPM_DIR/render_kit.mjs" kustomize "$F2" >"$TMP/root/deploy/payments-kustomize.yaml" 2>"$TMP/err"; then
    rendered+=("$TMP/root/deploy/payments-kustomize.yaml")
    ok "rendered ${F2#"$ROOT"/}: $(grep -c '^kind:' "$TMP/root/deploy/payments-kustomize.yaml") object(s)"
else
    cat "$TMP/err"
    fail "render_kit.mjs kustomize ${F2#"$ROOT"/} failed (above)"
fi
if node "$NPM_DIR/render_kit.mjs" helm "$CHART" --release payments --namespace shop -f "$F2/payments-values.yaml" \
    >"$TMP/root/deploy/payments-helm.yaml" 2>"$TMP/err"; then
    rendered+=("$TMP/root/deploy/payments-helm.yaml")
    ok "rendered $CHART (release payments, namespace shop): $(grep -c '^kind:' "$TMP/root/deploy/payments-helm.yaml") object(s)"
else
    cat "$TMP/err"
    fail "render_kit.mjs helm $CHART --release payments failed (above)"
fi

# The chart with values of other YAML types than strings (ci/typed-values.yaml:
# numbers, booleans): each lands as the string it stands for. A printf "%q" of
# a number rendered %!q(float64=8080) (review); render_kit.mjs refuses a Go fmt
# error, check_kit.mjs values compares each value.
TYPED=$CHART/ci/typed-values.yaml
if node "$NPM_DIR/render_kit.mjs" helm "$CHART" --release orders --namespace shop -f "$TYPED" >"$TMP/typed-helm.yaml" 2>"$TMP/err"; then
    rendered+=("$TMP/typed-helm.yaml")
    if out=$(node "$NPM_DIR/check_kit.mjs" values "$TYPED" "$TMP/typed-helm.yaml" 2>&1); then
        printf '%s\n' "$out"
    else
        printf '%s\n' "$out"
        fail "$TYPED: a value did not render as the string it stands for (above)"
    fi
else
    cat "$TMP/err"
    fail "render_kit.mjs helm $CHART -f $TYPED failed (above)"
fi

# --- 2. the manifest checks on each rendering ------------------------------------
for r in "${rendered[@]}"; do
    if out=$(node "$NPM_DIR/check_k8s.mjs" "$r" 2>&1); then
        ok "check_k8s.mjs ${r##*/}: $(tail -1 <<<"$out")"
    else
        printf '%s\n' "$out"
        fail "check_k8s.mjs rejected the rendering ${r##*/} (above)"
    fi
done

# --- 3. the kit's facts ------------------------------------------------------------
for r in "${rendered[@]}"; do
    out=$(node "$NPM_DIR/check_kit.mjs" facts "$r" 2>&1) || fail "check_kit.mjs facts ${r##*/}"
    printf '%s\n' "$out"
done

# --- 4. negative cases: the checks and the renderer bite -----------------------
if out=$(node "$NPM_DIR/render_kit.mjs" helm "$CHART" --release x --namespace y 2>&1); then
    fail "the chart rendered without app.image"
elif grep -q 'set app.image' <<<"$out"; then
    ok "the chart refuses to render without app.image ($out)"
else
    printf '%s\n' "$out"
    fail "the chart failed without app.image, but not with 'set app.image'"
fi
printf 'podMonitor:\n  enabled: false\n' >"$TMP/no-podmonitor.yaml"
if node "$NPM_DIR/render_kit.mjs" helm "$CHART" --release orders --namespace shop -f "$CHART/ci/orders-values.yaml" \
    -f "$TMP/no-podmonitor.yaml" >"$TMP/no-pm.yaml" 2>&1 &&
    ! out=$(node "$NPM_DIR/check_kit.mjs" facts "$TMP/no-pm.yaml" 2>&1) && grep -q 'no PodMonitor selects' <<<"$out"; then
    ok "check_kit.mjs facts rejects a rendering without the PodMonitor"
else
    printf '%s\n' "$out"
    fail "check_kit.mjs facts did not reject a rendering without the PodMonitor"
fi
mkdir -p "$TMP/kneg"
cp deploy/kustomize/example/*.yaml "$TMP/kneg/"
printf 'namePrefix: x-\n' >>"$TMP/kneg/kustomization.yaml"
sed -i "s#\.\./components/mtlsd-sidecar#$ROOT/deploy/kustomize/components/mtlsd-sidecar#" "$TMP/kneg/kustomization.yaml"
if ! out=$(node "$NPM_DIR/render_kit.mjs" kustomize "$TMP/kneg" 2>&1) && grep -q "'namePrefix' is not supported" <<<"$out"; then
    ok "render_kit.mjs refuses a kustomize feature it does not implement (namePrefix)"
else
    printf '%s\n' "$out"
    fail "render_kit.mjs did not refuse namePrefix"
fi

# --- 5. the rendered mtlsd configs -------------------------------------------------
for r in "${rendered[@]}"; do
    if out=$("$PY" "$DEPLOY_TESTS/config_keys.py" "$r" 2>&1); then
        printf '%s\n' "$out"
    else
        printf '%s\n' "$out"
        fail "a rendered mtlsd config breaks the configuration contract (above)"
    fi
done
if [[ -n $BIN && -x $BIN ]]; then
    bash scripts/gen-pki.sh "$TMP/pki" >/dev/null || die "scripts/gen-pki.sh failed"
    if out=$("$PY" "$DEPLOY_TESTS/extract_configs.py" --root "$TMP/root" --pki "$TMP/pki" --out "$TMP/configs" --mtlsd "$BIN" 2>&1); then
        ok "mtlsd check accepts every rendered config: $(cut -f2 "$TMP/configs/index.tsv" | tr '\n' ' ')"
    else
        printf '%s\n' "$out"
        fail "mtlsd check rejected a rendered config (above)"
    fi
else
    fail "no mtlsd binary (pass one, or build build/release/mtlsd): rendered configs not checked with mtlsd check"
fi

# --- 6. README worked example --------------------------------------------------------
if out=$("$PY" - README.md <<'EOF'
import re, shlex, sys
text = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r"^## A worked example\n(.*?)^## ", text, re.S | re.M)
if not m:
    sys.exit("FAIL: README.md has no '## A worked example' section")
block = m.group(1)
pki = re.findall(r"^mkdir (\S+) && cd \1$", block, re.M)
servers = [l for l in block.splitlines() if l.startswith("python3 -m http.server")]
if not pki or not servers:
    sys.exit("FAIL: README.md worked example: no `mkdir PKI && cd PKI` or no http.server upstream found")
for line in servers:
    words = shlex.split(line.split("#")[0].rstrip(" &"))
    d = words[words.index("--directory") + 1] if "--directory" in words else "."
    if d.rstrip("/") in (".", "..", "", pki[0]) or d.startswith(pki[0] + "/"):
        sys.exit(f"FAIL: README.md worked example serves {d!r} (the PKI in {pki[0]}/, with ca.key): {line.strip()}")
    if f"mkdir {d}" not in block and f"mkdir -p {d}" not in block:
        sys.exit(f"FAIL: README.md worked example serves {d!r} but never creates it")
print(f"ok: README.md worked example: the upstream serves {d}/, not the directory holding {pki[0]}/")
EOF
); then
    say "$out"
else
    say "$out"
    fail "README.md worked example (above)"
fi

# --- 7. two apps in one namespace --------------------------------------------------
R=$TMP/root/deploy
for pair in "orders-kustomize payments-kustomize" "orders-helm payments-helm"; do
    read -r a b <<<"$pair"
    if [[ -s $R/$a.yaml && -s $R/$b.yaml ]]; then
        if out=$(node "$NPM_DIR/check_kit.mjs" distinct "$R/$a.yaml" "$R/$b.yaml" 2>&1); then
            ok "$a + $b (one namespace): ${out#ok: }"
        else
            printf '%s\n' "$out"
            fail "$a and $b collide in one namespace (above)"
        fi
    else
        fail "$a or $b was not rendered: two apps in one namespace not checked"
    fi
done
# What the kit rendered before its names were per app: every app's ConfigMap
# mtlsd, Certificate mtlsd -> Secret mtlsd-tls, PodMonitor mtlsd selecting
# only the sidecar label. The check must refuse that pair.
fixed_names() { # IN OUT
    "$PY" - "$1" "$2" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    name = d["metadata"]["name"]
    if d["kind"] in ("ConfigMap", "Certificate", "PodMonitor") and name.endswith("-mtlsd"):
        d["metadata"]["name"] = "mtlsd"
    if d["kind"] == "Certificate":
        d["spec"]["secretName"] = "mtlsd-tls"
    if d["kind"] == "PodMonitor":
        d["spec"]["selector"] = {"matchLabels": {"mtlsd/sidecar": "enabled"}}
    if d["kind"] == "Deployment":
        for v in d["spec"]["template"]["spec"]["volumes"]:
            for s in v.get("projected", {}).get("sources", []):
                if s.get("configMap", {}).get("name", "").endswith("-mtlsd"):
                    s["configMap"]["name"] = "mtlsd"
                if s.get("secret", {}).get("name", "").endswith("-mtlsd-tls"):
                    s["secret"]["name"] = "mtlsd-tls"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"), sort_keys=False)
EOF
}
if [[ -s $R/orders-kustomize.yaml && -s $R/payments-kustomize.yaml ]] &&
    fixed_names "$R/orders-kustomize.yaml" "$TMP/fixed-orders.yaml" &&
    fixed_names "$R/payments-kustomize.yaml" "$TMP/fixed-payments.yaml"; then
    out=$(node "$NPM_DIR/check_kit.mjs" distinct "$TMP/fixed-orders.yaml" "$TMP/fixed-payments.yaml" 2>&1)
    rc=$?
    missing=()
    for want in "ConfigMap/shop/mtlsd is in 2" "Certificate/shop/mtlsd is in 2" "Secret/shop/mtlsd-tls" "PodMonitor/shop/mtlsd is in 2" \
        "selects the pods of Deployment shop/payments" "selects the pods of Deployment shop/orders"; do
        grep -qF -- "$want" <<<"$out" || missing+=("$want")
    done
    if ((rc == 1 && ${#missing[@]} == 0)); then
        ok "check_kit.mjs distinct refuses two apps with the kit's former fixed names ($(grep -c '^FAIL' <<<"$out") problem(s))"
    else
        printf '%s\n' "$out"
        fail "check_kit.mjs distinct did not refuse fixed names (exit $rc; not reported: ${missing[*]})"
    fi
    # And the facts of one such rendering: not named after its Deployment, PodMonitor too wide.
    if ! out=$(node "$NPM_DIR/check_kit.mjs" facts "$TMP/fixed-payments.yaml" 2>&1) &&
        grep -q "is not named after the Deployment" <<<"$out" && grep -q "scrapes other apps' pods" <<<"$out"; then
        ok "check_kit.mjs facts refuses a rendering whose objects are not named after the Deployment"
    else
        printf '%s\n' "$out"
        fail "check_kit.mjs facts accepted fixed names or a PodMonitor on the sidecar label alone"
    fi
else
    fail "could not build the fixed-name renderings (needs python3-yaml)"
fi

# --- 8. the kit's mtlsd.yaml = the hand-written deploy/kubernetes/configmap.yaml ------
HAND=deploy/kubernetes/configmap.yaml
for r in "${rendered[@]}"; do
    case ${r##*/} in
        orders-*) except=() ;;                                 # the same app: every key
        *) except=(listeners/0/client_auth/allow) ;;           # other apps: their own callers
    esac
    if out=$(node "$NPM_DIR/check_kit.mjs" config "$HAND" "$r" "${except[@]}" 2>&1); then
        printf '%s\n' "$out"
    else
        printf '%s\n' "$out"
        fail "${r##*/}: the kit's mtlsd.yaml differs from $HAND (above)"
    fi
done
if [[ -s $R/orders-kustomize.yaml ]]; then
    sed '/forward_client_cert_details/d' "$R/orders-kustomize.yaml" >"$TMP/no-xfcc.yaml"
    if ! out=$(node "$NPM_DIR/check_kit.mjs" config "$HAND" "$TMP/no-xfcc.yaml" 2>&1) &&
        grep -q "/listeners/0/http/forward_client_cert_details is absent" <<<"$out"; then
        ok "check_kit.mjs config refuses a kit config without http.forward_client_cert_details"
    else
        printf '%s\n' "$out"
        fail "check_kit.mjs config did not refuse a kit config without http.forward_client_cert_details"
    fi
fi

# The orders Certificate = the hand-written deploy/kubernetes/certificate.yaml
# (its dnsNames above all: the shipped outbound client checks server_name
# orders.shop.svc.cluster.local, and refused the kit's certificate without them).
HANDCERT=deploy/kubernetes/certificate.yaml
for r in "$R"/orders-*.yaml; do
    if out=$(node "$NPM_DIR/check_kit.mjs" certificate "$HANDCERT" "$r" 2>&1); then
        printf '%s\n' "$out"
    else
        printf '%s\n' "$out"
        fail "${r##*/}: the kit's Certificate differs from $HANDCERT (above)"
    fi
done
if [[ -s $R/orders-helm.yaml ]]; then
    sed '/^  dnsNames:/,/^  [a-zA-Z]/{/^    - /d}' "$R/orders-helm.yaml" >"$TMP/no-dns.yaml"
    if ! out=$(node "$NPM_DIR/check_kit.mjs" certificate "$HANDCERT" "$TMP/no-dns.yaml" 2>&1) &&
        grep -q "spec.dnsNames is " <<<"$out"; then
        ok "check_kit.mjs certificate refuses an orders Certificate without the dnsNames"
    else
        printf '%s\n' "$out"
        fail "check_kit.mjs certificate did not refuse an orders Certificate without the dnsNames"
    fi
fi

# --- 9. render_kit.mjs = kubectl kustomize, where one is at hand ---------------------
KUBECTL=${KUBECTL:-kubectl}
kver=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\)\..*/\1/p')
if [[ -z $kver ]] || ((kver < 5)); then
    say "skipped: render_kit.mjs vs kubectl kustomize (\"$KUBECTL\" with kustomize >= v5 not found; set KUBECTL to one)"
else
    for pair in "deploy/kustomize/example $R/orders-kustomize.yaml" \
        "deploy/kustomize/example-trust-bundle $R/orders-trust-bundle-kustomize.yaml" \
        "${F#"$ROOT"/} $TMP/kit-app.yaml" "${F2#"$ROOT"/} $R/payments-kustomize.yaml"; do
        read -r kdir ours <<<"$pair"
        if [[ ! -s $ours ]]; then
            fail "$kdir: no render_kit.mjs rendering to compare with kubectl kustomize"
        elif ! "$KUBECTL" kustomize "$kdir" >"$TMP/real.yaml" 2>"$TMP/err"; then
            cat "$TMP/err"
            fail "kubectl kustomize $kdir failed (above)"
        elif out=$(node "$NPM_DIR/check_kit.mjs" identical "$ours" "$TMP/real.yaml" 2>&1); then
            ok "$kdir (kustomize v$kver): ${out#ok: }"
        else
            printf '%s\n' "$out"
            fail "$kdir: render_kit.mjs and kubectl kustomize (v$kver) render different objects (above)"
        fi
    done
fi

finish check_kit
