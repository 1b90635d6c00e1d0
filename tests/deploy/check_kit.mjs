// Checks on rendered rollout-kit output, run by check_kit.sh:
//
//   node check_kit.mjs facts FILE            the kit's promises, in one rendering
//   node check_kit.mjs same KUSTOMIZE HELM   both renderings hold the same objects
//   node check_kit.mjs identical OURS REAL   render_kit.mjs's kustomize rendering is
//                                            `kubectl kustomize`'s of the same dir
//   node check_kit.mjs keeps APP RENDERED    the app's own containers, volumes,
//                                            pod labels and securityContext survive
//   node check_kit.mjs distinct FILE FILE... renderings of different apps, applied
//                                            to one namespace, do not collide
//   node check_kit.mjs config HAND FILE [PATH...]
//                                            the sidecar's mtlsd.yaml in FILE is the
//                                            one of the hand-written ConfigMap HAND,
//                                            but for the PATHs (e.g.
//                                            listeners/0/client_auth/allow)
//   node check_kit.mjs certificate HAND FILE the sidecar's Certificate in FILE has
//                                            the hand-written one's spec (dnsNames,
//                                            uris, ...; not its Secret's name)
//   node check_kit.mjs values VALUES FILE    a Helm rendering with VALUES holds each
//                                            value it copies as the string it
//                                            stands for (numbers, booleans)
//
// facts: exactly one Deployment, with mtlsd as a native sidecar (init
// container, restartPolicy: Always) mounting a ConfigMap and the Secret of a
// cert-manager Certificate in the same namespace; the Certificate comes from a
// ClusterIssuer (the CA key is not in the workload namespace) and carries the
// SPIFFE ID of the Deployment's namespace and service account, which exists;
// a PodMonitor in that namespace selects the pod and scrapes a port mtlsd
// declares, and its selector holds the Deployment's selector labels (it
// scrapes no other app's pods); the kit's ConfigMap, Certificate, Secret and
// PodMonitor are named after the Deployment (DEPLOYMENT-...), so that two apps
// in one namespace cannot share them. (Schema, hardening, probes and the
// grace period are check_k8s.mjs's.)
//
// same: the kustomize rendering of deploy/kustomize/example and the Helm
// rendering of the chart with ci/orders-values.yaml are the same objects
// (names included: both name the kit's objects after the Deployment), mtlsd
// configs compared as parsed YAML, not text.
//
// identical: the same objects, key for key and value for value (a string is
// not a boolean), lists in the same order (init containers run in it); only
// the order of the objects in the stream and of keys in a map may differ.
//
// distinct: no two renderings hold an object of the same kind, namespace and
// name (applying the second would overwrite the first: its identity, its
// allow list), nor Certificates writing the same Secret, and no PodMonitor
// selects the pods of another rendering's Deployment (scraped twice).
//
// config: the kit's mtlsd.yaml against the hand-written one (parsed): every
// key and value must agree, except under the PATHs given. Exit 1 with one
// FAIL line per difference.

import { readFileSync } from "node:fs";
import { parseAllDocuments, parse as parseYaml } from "yaml";

const load = (file) =>
  parseAllDocuments(readFileSync(file, "utf8"), { version: "1.1" })
    .map((d) => d.toJS())
    .filter((o) => o !== null && o !== undefined);
const problems = [];
const fail = (m) => problems.push(m);

function facts(file) {
  const objs = load(file);
  const find = (kind, ns, name) => objs.find((o) => o.kind === kind && o.metadata?.namespace === ns && o.metadata?.name === name);
  const deps = objs.filter((o) => o.kind === "Deployment");
  if (deps.length !== 1) return fail(`${file}: ${deps.length} Deployments, expected 1`);
  const d = deps[0];
  const ns = d.metadata.namespace;
  const pod = d.spec?.template ?? {};
  const spec = pod.spec ?? {};
  const sidecar = (spec.initContainers ?? []).find((c) => c.name === "mtlsd");
  if (!sidecar) return fail(`${file}: Deployment ${d.metadata.name} has no mtlsd init container`);
  if (sidecar.restartPolicy !== "Always") fail(`${file}: mtlsd init container lacks restartPolicy: Always (not a native sidecar)`);
  if ((spec.containers ?? []).some((c) => c.name === "mtlsd")) fail(`${file}: mtlsd is also a regular container`);
  if (!(spec.containers ?? []).length) fail(`${file}: the Deployment has no app container`);
  const mount = (sidecar.volumeMounts ?? []).find((m) => m.mountPath === "/etc/mtlsd");
  const vol = (spec.volumes ?? []).find((v) => v.name === mount?.name);
  const sources = vol?.projected?.sources ?? [];
  const cmName = sources.find((s) => s.configMap)?.configMap.name;
  const secretName = sources.find((s) => s.secret)?.secret.name;
  if (!cmName || !find("ConfigMap", ns, cmName)) fail(`${file}: the sidecar's ConfigMap ${cmName} is not rendered in namespace ${ns}`);
  const sa = spec.serviceAccountName;
  if (!sa || !find("ServiceAccount", ns, sa)) fail(`${file}: ServiceAccount ${sa} is not rendered in namespace ${ns}`);
  const cert = objs.find((o) => o.kind === "Certificate" && o.spec?.secretName === secretName);
  if (!cert) {
    fail(`${file}: no Certificate writes the sidecar's Secret ${secretName}`);
  } else {
    if (cert.metadata.namespace !== ns) fail(`${file}: Certificate ${cert.metadata.name} is in ${cert.metadata.namespace}, the Deployment in ${ns}`);
    const want = `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    if (JSON.stringify(cert.spec.uris) !== JSON.stringify([want])) fail(`${file}: Certificate uris ${JSON.stringify(cert.spec.uris)}, expected [${want}]`);
    if (cert.spec.issuerRef?.kind !== "ClusterIssuer") fail(`${file}: Certificate issuerRef.kind ${cert.spec.issuerRef?.kind}: the mesh CA's key must not live in the workload namespace (ClusterIssuer)`);
    if (cert.spec.privateKey?.rotationPolicy !== "Always") fail(`${file}: Certificate privateKey.rotationPolicy must be Always`);
  }
  if (objs.some((o) => o.kind === "Issuer" || (o.kind === "Secret" && o.metadata?.namespace === ns && /(^|-)ca(-|$)/.test(o.metadata?.name ?? "")))) {
    fail(`${file}: an Issuer or CA Secret is rendered into the workload namespace`);
  }
  const pms = objs.filter((o) => o.kind === "PodMonitor");
  const labels = pod.metadata?.labels ?? {};
  const selects = (pm) =>
    (pm.metadata.namespace === ns || (pm.spec.namespaceSelector?.matchNames ?? []).includes(ns)) &&
    Object.entries(pm.spec.selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
    (pm.spec.selector?.matchExpressions ?? []).length === 0;
  const pm = pms.find(selects);
  if (!pm) fail(`${file}: no PodMonitor selects the Deployment's pods (labels ${JSON.stringify(labels)})`);
  else {
    const ports = (sidecar.ports ?? []).map((p) => p.name);
    for (const ep of pm.spec.podMetricsEndpoints ?? []) {
      if (!ports.includes(ep.port)) fail(`${file}: PodMonitor port ${ep.port} is not a port of the mtlsd container (${ports})`);
    }
    // Only this app's pods: the Deployment's own selector labels are part of
    // the PodMonitor's selector (with the sidecar label alone, every app of
    // the namespace with the kit would be scraped by every PodMonitor).
    const own = d.spec?.selector?.matchLabels ?? {};
    const pmLabels = pm.spec.selector?.matchLabels ?? {};
    if (!Object.keys(own).length) fail(`${file}: Deployment ${d.metadata.name} has no spec.selector.matchLabels`);
    for (const [k, v] of Object.entries(own)) {
      if (pmLabels[k] !== v) fail(`${file}: PodMonitor ${pm.metadata.name} does not select ${k}=${v} (the Deployment's selector): it scrapes other apps' pods too`);
    }
  }
  // The kit's objects are the app's own: named after the Deployment.
  const prefix = `${d.metadata.name}-`;
  for (const [what, name] of [["ConfigMap", cmName], ["Certificate", cert?.metadata?.name], ["Secret", secretName], ["PodMonitor", pm?.metadata?.name]]) {
    if (name && !name.startsWith(prefix)) fail(`${file}: ${what} ${name} is not named after the Deployment (${prefix}...): two apps in a namespace would share it`);
  }
  if (!problems.length) {
    console.log(`ok: ${file}: Deployment ${ns}/${d.metadata.name} with the mtlsd native sidecar, ConfigMap ${cmName}, ` +
      `Certificate ${cert.metadata.name} (${cert.spec.uris[0]}, ClusterIssuer ${cert.spec.issuerRef.name}) -> Secret ${secretName}, PodMonitor ${pm.metadata.name}`);
  }
}

// Canonical form: names mapped, mtlsd configs parsed, keys sorted.
function canonical(objs, rename) {
  const map = (v) => {
    if (typeof v === "string") return rename[v] ?? v;
    if (Array.isArray(v)) return v.map(map);
    if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, map(v[k])]));
    return v;
  };
  const out = new Map();
  for (const o of objs) {
    const c = map(o);
    if (c.kind === "ConfigMap") {
      for (const [k, v] of Object.entries(c.data ?? {})) if (/\.ya?ml$/.test(k)) c.data[k] = map(parseYaml(v));
    }
    out.set(`${c.kind}/${c.metadata?.namespace}/${c.metadata?.name}`, c);
  }
  return out;
}

function diff(a, b, path, out, names = ["kustomize", "helm"]) {
  if (JSON.stringify(a) === JSON.stringify(b)) return;
  // A list of named items (containers, volumes, ...) in another order: one line.
  const named = (l) => Array.isArray(l) && l.every((x) => typeof x?.name === "string") && l.map((x) => x.name);
  if (named(a) && named(b) && JSON.stringify(named(a)) !== JSON.stringify(named(b))) {
    out.push(`${path}: ${names[0]} [${named(a)}] vs ${names[1]} [${named(b)}]`);
    return;
  }
  if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diff(a[k], b[k], `${path}/${k}`, out, names);
    return;
  }
  out.push(`${path}: ${names[0]} ${JSON.stringify(a)} vs ${names[1]} ${JSON.stringify(b)}`);
}

function compare(afile, bfile, names) {
  const a = canonical(load(afile), {});
  const b = canonical(load(bfile), {});
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (!a.has(key)) fail(`only ${names[1]} renders ${key}`);
    else if (!b.has(key)) fail(`only ${names[0]} renders ${key}`);
    else {
      const out = [];
      diff(a.get(key), b.get(key), key, out, names);
      out.forEach((m) => fail(m));
    }
  }
  return a;
}

function same(kfile, hfile) {
  const k = compare(kfile, hfile, ["kustomize", "helm"]);
  if (!problems.length) console.log(`ok: kustomize and Helm render the same ${k.size} objects: ${[...k.keys()].join(", ")}`);
}

function identical(ours, real) {
  const o = compare(ours, real, ["render_kit.mjs", "kubectl kustomize"]);
  if (!problems.length) console.log(`ok: render_kit.mjs and kubectl kustomize render the same ${o.size} objects, key for key`);
}

// keeps: every container, init container, volume and pod label of the
// original Deployment is in the rendering unchanged (the kit only adds).
function keeps(origFile, renderedFile) {
  const orig = load(origFile).find((o) => o.kind === "Deployment");
  const out = load(renderedFile).find((o) => o.kind === "Deployment" && o.metadata.name === orig?.metadata?.name);
  if (!orig || !out) return fail(`${renderedFile}: Deployment ${orig?.metadata?.name} missing`);
  const o = orig.spec.template;
  const r = out.spec.template;
  const same = (a, b) => JSON.stringify(canonical([a], {}).values().next().value) === JSON.stringify(canonical([b], {}).values().next().value);
  for (const list of ["initContainers", "containers", "volumes"]) {
    for (const item of o.spec[list] ?? []) {
      const got = (r.spec[list] ?? []).find((x) => x.name === item.name);
      if (!got) fail(`${renderedFile}: ${list} ${item.name} of the app is gone`);
      else if (!same(item, got)) fail(`${renderedFile}: ${list} ${item.name} of the app was changed`);
    }
  }
  for (const [k, v] of Object.entries(o.metadata?.labels ?? {})) {
    if (r.metadata?.labels?.[k] !== v) fail(`${renderedFile}: pod label ${k} of the app was changed`);
  }
  for (const [k, v] of Object.entries(o.spec.securityContext ?? {})) {
    if (JSON.stringify(r.spec.securityContext?.[k]) !== JSON.stringify(v)) fail(`${renderedFile}: pod securityContext.${k} of the app was changed`);
  }
  if (!problems.length) {
    const names = (l) => (r.spec[l] ?? []).map((x) => x.name).join(", ");
    console.log(`ok: ${renderedFile}: the app's own parts are unchanged; initContainers [${names("initContainers")}], containers [${names("containers")}], volumes [${names("volumes")}]`);
  }
}

// A Kubernetes label selector (matchLabels and matchExpressions) against labels.
function selectorMatches(sel, labels) {
  if (!sel) return false;
  const okLabels = Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const okExprs = (sel.matchExpressions ?? []).every((e) => {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case "In": return has && (e.values ?? []).includes(labels[e.key]);
      case "NotIn": return !has || !(e.values ?? []).includes(labels[e.key]);
      case "Exists": return has;
      case "DoesNotExist": return !has;
      default: return false;
    }
  });
  return okLabels && okExprs;
}

function distinct(files) {
  const owners = new Map(); // KIND/ns/name -> [file]
  const add = (key, file) => owners.set(key, [...(owners.get(key) ?? []), file]);
  const rendered = files.map((f) => ({ file: f, objs: load(f) }));
  for (const { file, objs } of rendered) {
    const keys = new Set();
    for (const o of objs) {
      keys.add(`${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`);
      // cert-manager writes this Secret: two Certificates writing one Secret
      // overwrite each other's key pair as surely as two of the same name.
      if (o.kind === "Certificate" && o.spec?.secretName) keys.add(`Secret/${o.metadata?.namespace ?? ""}/${o.spec.secretName} (a Certificate's secretName)`);
    }
    for (const k of keys) add(k, file);
  }
  for (const [key, fs] of owners) {
    if (fs.length > 1) fail(`${key} is in ${fs.length} renderings (${fs.join(", ")}): applied to one namespace, the later overwrites the earlier`);
  }
  // Every PodMonitor scrapes the pods of its own rendering's Deployment only.
  for (const { file, objs } of rendered) {
    for (const pm of objs.filter((o) => o.kind === "PodMonitor")) {
      const nss = pm.spec?.namespaceSelector?.any ? null : (pm.spec?.namespaceSelector?.matchNames ?? [pm.metadata?.namespace]);
      for (const other of rendered.filter((r) => r.file !== file)) {
        for (const d of other.objs.filter((o) => o.kind === "Deployment")) {
          const inNs = nss === null || nss.includes(d.metadata?.namespace);
          if (inNs && selectorMatches(pm.spec?.selector, d.spec?.template?.metadata?.labels ?? {})) {
            fail(`PodMonitor ${pm.metadata.namespace}/${pm.metadata.name} (${file}) selects the pods of Deployment ${d.metadata.namespace}/${d.metadata.name} (${other.file}): they are scraped twice`);
          }
        }
      }
    }
  }
  if (!problems.length) {
    const count = rendered.reduce((n, r) => n + r.objs.length, 0);
    console.log(`ok: ${files.length} renderings (${count} objects) share no object, no Certificate Secret, and each PodMonitor selects only its own app's pods`);
  }
}

// The mtlsd.yaml of the ConfigMap the sidecar (init container mtlsd) mounts.
function sidecarConfig(file) {
  const objs = load(file);
  const d = objs.find((o) => o.kind === "Deployment");
  const sources = (d?.spec?.template?.spec?.volumes ?? []).find((v) => v.name === "mtlsd")?.projected?.sources ?? [];
  const cmName = sources.find((x) => x.configMap)?.configMap?.name;
  const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata?.name === cmName);
  if (!cm?.data?.["mtlsd.yaml"]) return null;
  return { name: `${cm.metadata.namespace ?? ""}/${cm.metadata.name}`, config: parseYaml(cm.data["mtlsd.yaml"]) };
}

function config(handFile, file, ignored) {
  const hand = load(handFile).find((o) => o.kind === "ConfigMap" && o.data?.["mtlsd.yaml"]);
  if (!hand) return fail(`${handFile}: no ConfigMap with mtlsd.yaml`);
  const kit = sidecarConfig(file);
  if (!kit) return fail(`${file}: the sidecar's ConfigMap with mtlsd.yaml is not rendered`);
  const want = parseYaml(hand.data["mtlsd.yaml"]);
  const walk = (a, b, path) => {
    if (ignored.some((p) => path === `/${p}`)) return;
    if (JSON.stringify(a) === JSON.stringify(b)) return;
    if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) walk(a[k], b[k], `${path}/${k}`);
      return;
    }
    const show = (v) => (v === undefined ? "absent" : JSON.stringify(v));
    fail(`${file} (ConfigMap ${kit.name}): ${path || "/"} is ${show(a)}, the hand-written ${handFile} has ${show(b)}`);
  };
  walk(kit.config, want, "");
  if (!problems.length) {
    const but = ignored.length ? `, except ${ignored.join(", ")}` : "";
    console.log(`ok: ${file}: the sidecar's mtlsd.yaml (ConfigMap ${kit.name}) agrees with ${handFile} in every key${but}`);
  }
}

// The Certificate writing the sidecar's Secret, and the hand-written one (the
// only Certificate of HAND): every spec key of the hand-written one but its
// secretName and secretTemplate (names and labels of its own) must agree.
// dnsNames above all: without them the shipped outbound client (server_name
// orders.shop.svc.cluster.local) refuses the kit's orders (hostname_mismatch).
function certificate(handFile, file) {
  const hand = load(handFile).filter((o) => o.kind === "Certificate");
  if (hand.length !== 1) return fail(`${handFile}: ${hand.length} Certificates, expected 1`);
  const objs = load(file);
  const d = objs.find((o) => o.kind === "Deployment");
  const sources = (d?.spec?.template?.spec?.volumes ?? []).find((v) => v.name === "mtlsd")?.projected?.sources ?? [];
  const secretName = sources.find((x) => x.secret)?.secret?.name;
  const kit = objs.find((o) => o.kind === "Certificate" && o.spec?.secretName === secretName);
  if (!kit) return fail(`${file}: no Certificate writes the sidecar's Secret ${secretName}`);
  const keys = Object.keys(hand[0].spec).filter((k) => !["secretName", "secretTemplate"].includes(k));
  // Maps compare whatever their keys' order; lists in order.
  const text = (v) => JSON.stringify(v, (_, x) => (x && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x));
  for (const k of keys) {
    const [want, got] = [text(hand[0].spec[k]), text(kit.spec[k])];
    if (want !== got) fail(`${file}: Certificate ${kit.metadata.name} spec.${k} is ${got ?? "absent"}, the hand-written ${handFile} has ${want}`);
  }
  if (!problems.length) {
    console.log(`ok: ${file}: Certificate ${kit.metadata.name} agrees with ${handFile} in ${keys.join(", ")} (dnsNames ${JSON.stringify(kit.spec.dnsNames)})`);
  }
}

// A Helm rendering with VALUES: each value the chart copies into the objects
// (app.env[].value, the CPU limits, the PodMonitor's labels) is there as the
// string it stands for, whatever its YAML type (8080, true, 0.5, 2), and no
// string holds Go's fmt error (`%!q(float64=8080)`: printf "%q" on a value
// that is not a string).
function values(valuesFile, file) {
  const v = parseYaml(readFileSync(valuesFile, "utf8")) ?? {};
  const objs = load(file);
  const spec = objs.find((o) => o.kind === "Deployment")?.spec?.template?.spec ?? {};
  const app = (spec.containers ?? []).find((c) => c.name === "app");
  const sidecar = (spec.initContainers ?? []).find((c) => c.name === "mtlsd");
  const pm = objs.find((o) => o.kind === "PodMonitor");
  const checks = [];
  for (const e of v.app?.env ?? []) checks.push([`app env ${e.name}`, e.value, app?.env?.find((x) => x.name === e.name)?.value]);
  if (v.app?.resources?.limits?.cpu !== undefined) checks.push(["app cpu limit", v.app.resources.limits.cpu, app?.resources?.limits?.cpu]);
  if (v.mtlsd?.resources?.limits?.cpu !== undefined) checks.push(["mtlsd cpu limit", v.mtlsd.resources.limits.cpu, sidecar?.resources?.limits?.cpu]);
  for (const [k, val] of Object.entries(v.podMonitor?.labels ?? {})) checks.push([`PodMonitor label ${k}`, val, pm?.metadata?.labels?.[k]]);
  for (const [what, given, got] of checks) {
    if (got !== String(given)) fail(`${file}: ${what} is ${JSON.stringify(got)}, expected the string ${JSON.stringify(String(given))} (${valuesFile} gives ${typeof given} ${JSON.stringify(given)})`);
  }
  const walk = (x, path) => {
    if (typeof x === "string" && x.includes("%!")) fail(`${file}: ${path} is ${JSON.stringify(x)}: a Go fmt error in the rendering`);
    else if (x && typeof x === "object") for (const [k, y] of Object.entries(x)) walk(y, `${path}/${k}`);
  };
  objs.forEach((o, i) => walk(o, `${o.kind}[${i}]`));
  if (!checks.length) fail(`${valuesFile}: gives none of app.env, the CPU limits, podMonitor.labels: nothing checked`);
  if (!problems.length) console.log(`ok: ${file}: ${checks.map(([w, given]) => `${w} ${JSON.stringify(given)} -> "${String(given)}"`).join(", ")}`);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "keeps" && args.length === 2) keeps(args[0], args[1]);
else if (mode === "facts" && args.length === 1) facts(args[0]);
else if (mode === "same" && args.length === 2) same(args[0], args[1]);
else if (mode === "identical" && args.length === 2) identical(args[0], args[1]);
else if (mode === "distinct" && args.length >= 2) distinct(args);
else if (mode === "config" && args.length >= 2) config(args[0], args[1], args.slice(2));
else if (mode === "certificate" && args.length === 2) certificate(args[0], args[1]);
else if (mode === "values" && args.length === 2) values(args[0], args[1]);
else {
  console.error("usage: node check_kit.mjs facts FILE | same KUSTOMIZE_OUTPUT HELM_OUTPUT | identical RENDER_KIT_OUTPUT KUBECTL_OUTPUT | keeps APP_YAML RENDERED | distinct FILE FILE... | config HANDWRITTEN FILE [PATH...] | certificate HANDWRITTEN FILE | values VALUES FILE");
  process.exit(2);
}
for (const p of problems) console.log(`FAIL: ${p}`);
process.exit(problems.length ? 1 : 0);
