// Offline checks for Kubernetes manifests, run by check_manifests.sh:
//
//   node check_k8s.mjs FILE...
//
// For every object in every YAML document:
//   1. schema: the kubernetes-models / @kubernetes-models/{cert-manager,
//      prometheus-operator} model's own validate() (types, enums, required);
//   2. strict keys: those validators ignore keys they do not know, so each
//      object is validated once more through a Proxy that records which
//      properties the generated validator reads. The validator reads every
//      property its schema declares (and every entry of a map), so a key it
//      never reads is unknown to the schema: a typo such as `readinesProbe`;
//   3. no CA Issuer in a namespace (the CA key would sit beside the workloads);
//      mtlsd policy, for every pod template with a container named `mtlsd`:
//      hardening, probes on the admin port (startup: /readyz?exclude=upstream,
//      which the app behind a sidecar need not be running to pass; readiness:
//      /readyz; liveness: /healthz), resources, termination budget vs
//      the config's shutdown.drain_timeout, native-sidecar restartPolicy,
//      every file the mtlsd config names provided by a mounted volume, and
//      readiness/liveness probes on the app containers beside a sidecar that
//      the kubelet can reach (not mtlsd's loopback upstream port).
//
// Documents are parsed as YAML 1.1, as the Kubernetes API machinery does, so
// `on`/`yes` become booleans and fail string fields instead of slipping by.
// Exit status 1 with one "FAIL: file: doc N kind/name: message" line per
// problem; 0 with a summary otherwise.

import { readFileSync } from "node:fs";
import { parseAllDocuments, parse as parseYaml } from "yaml";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check_k8s.mjs FILE...");
  process.exit(2);
}

const problems = [];
let checkedObjects = 0;

function where(o) {
  const m = o.obj?.metadata ?? {};
  return `${o.file}: doc ${o.index + 1} ${o.obj?.kind ?? "?"}/${m.namespace ? m.namespace + "/" : ""}${m.name ?? "?"}`;
}
function problem(o, msg) {
  problems.push(`${where(o)}: ${msg}`);
}

// ---------------------------------------------------------------- loading
const objects = [];
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    problems.push(`${file}: cannot read: ${e.message}`);
    continue;
  }
  const docs = parseAllDocuments(text, { version: "1.1", uniqueKeys: true, prettyErrors: true });
  docs.forEach((doc, index) => {
    for (const e of [...doc.errors, ...doc.warnings]) {
      problems.push(`${file}: doc ${index + 1}: YAML: ${e.message.split("\n")[0]}`);
    }
    if (doc.errors.length) return;
    const obj = doc.toJS({ maxAliasCount: 0 });
    if (obj === null || obj === undefined) return; // empty document
    objects.push({ file, index, obj });
  });
}

// ---------------------------------------------------------------- models
const THIRD_PARTY = {
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "acme.cert-manager.io": "@kubernetes-models/cert-manager",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind)) {
    return { error: "apiVersion and kind must be strings" };
  }
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const pkg = THIRD_PARTY[group] ?? "kubernetes-models";
  const spec = `${pkg}/${apiVersion}/${kind}`;
  try {
    const mod = await import(spec);
    const cls = mod[kind];
    if (typeof cls !== "function") return { error: `${spec} exports no ${kind}` };
    return { cls, spec };
  } catch (e) {
    return { error: `no model for ${apiVersion} ${kind} (${spec}): ${e.code ?? e.message}` };
  }
}

function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// Wrap obj (deeply) in Proxies that record which keys are read. Returns the
// proxy and the list of {path, target, read} records for plain objects.
function instrument(root) {
  const records = [];
  const proxies = new Map();
  function wrap(value, path) {
    if (value === null || typeof value !== "object") return value;
    if (Array.isArray(value)) value.forEach((v, i) => wrap(v, `${path}/${i}`));
    else for (const [k, v] of Object.entries(value)) wrap(v, `${path}/${k}`);
    const read = new Set();
    if (!Array.isArray(value)) records.push({ path, target: value, read });
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key === "string") read.add(key);
        const v = Reflect.get(target, key, receiver);
        return v !== null && typeof v === "object" ? proxies.get(v) ?? v : v;
      },
      getOwnPropertyDescriptor(target, key) {
        if (typeof key === "string") read.add(key);
        return Reflect.getOwnPropertyDescriptor(target, key);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  }
  const proxy = wrap(root, "");
  return { proxy, records };
}

for (const o of objects) {
  checkedObjects++;
  const { obj } = o;
  if (!isPlainObject(obj)) {
    problem(o, "document is not a mapping");
    continue;
  }
  const model = await modelFor(obj.apiVersion, obj.kind);
  if (model.error) {
    problem(o, model.error);
    continue;
  }
  o.model = model.spec;
  // 1. schema
  try {
    new model.cls(structuredClone(obj)).validate();
  } catch (e) {
    const errs = e.errors ?? [];
    if (errs.length === 0) problem(o, `schema: ${e.message}`);
    for (const err of errs) {
      problem(o, `schema: ${err.instancePath || "/"} ${err.message}${err.params?.allowedValues ? " " + JSON.stringify(err.params.allowedValues) : ""}`);
    }
  }
  // 2. strict keys
  const { proxy, records } = instrument(structuredClone(obj));
  try {
    model.cls.prototype.validate.call(proxy);
  } catch {
    // already reported by the schema pass
  }
  const unknown = [];
  for (const r of records) {
    for (const k of Object.keys(r.target)) if (!r.read.has(k)) unknown.push(`${r.path}/${k}`);
  }
  // Report the outermost unknown key only, not everything beneath it.
  for (const u of unknown) {
    if (!unknown.some((v) => u.startsWith(v + "/"))) problem(o, `unknown key: ${u} (not in the ${obj.kind} schema)`);
  }
}

// ---------------------------------------------------------------- mtlsd policy
function parseDuration(s) {
  const m = /^(\d+)(ms|s|m|h)$/.exec(String(s ?? ""));
  if (!m) return null;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}

function podTemplate(obj) {
  switch (obj.kind) {
    case "Pod":
      return { metadata: obj.metadata, spec: obj.spec };
    case "Deployment":
    case "StatefulSet":
    case "DaemonSet":
    case "ReplicaSet":
    case "Job":
      return obj.spec?.template;
    case "CronJob":
      return obj.spec?.jobTemplate?.spec?.template;
    default:
      return null;
  }
}

function findConfigMap(namespace, name) {
  return objects.find(
    (x) => x.obj?.kind === "ConfigMap" && x.obj?.metadata?.name === name &&
      (x.obj?.metadata?.namespace ?? "default") === (namespace ?? "default"),
  );
}

// Map of absolute file path -> description, for every file a volume mounted
// into container c provides (configMap, secret, projected; items or all keys).
function mountedFiles(o, spec, c) {
  const files = new Map();
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  const ns = o.obj.metadata?.namespace;
  for (const m of c.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (!v) {
      problem(o, `container ${c.name}: volumeMount ${m.name} has no volume`);
      continue;
    }
    const base = m.mountPath.replace(/\/+$/, "");
    const sources = v.projected ? v.projected.sources ?? [] : [v];
    for (const s of sources) {
      const src = s.configMap ?? s.secret;
      if (!src) continue;
      const srcName = s.configMap ? s.configMap.name : s.secret.secretName ?? s.secret.name;
      const kind = s.configMap ? "ConfigMap" : "Secret";
      let keys = (src.items ?? []).map((it) => [it.key, it.path]);
      if (keys.length === 0 && s.configMap) {
        const cm = findConfigMap(ns, srcName);
        keys = Object.keys(cm?.obj?.data ?? {}).map((k) => [k, k]);
      }
      for (const [key, path] of keys) files.set(`${base}/${path}`, { kind, name: srcName, key });
    }
  }
  return files;
}

function configPaths(cfg) {
  const out = [];
  for (const l of cfg.listeners ?? []) {
    const tls = l.tls ?? {};
    for (const k of ["cert", "key", "key_password_file", "pkcs12", "pkcs12_password_file"]) {
      if (tls[k]) out.push([`listeners[${l.name}].tls.${k}`, tls[k]]);
    }
    for (const sect of ["client_auth", "server_auth"]) {
      (l[sect]?.ca ?? []).forEach((p, i) => out.push([`listeners[${l.name}].${sect}.ca[${i}]`, p]));
    }
    (l.revocation?.crl_files ?? []).forEach((p, i) => out.push([`listeners[${l.name}].revocation.crl_files[${i}]`, p]));
  }
  return out;
}

function checkMtlsdPod(o, tmpl) {
  const spec = tmpl.spec ?? {};
  const podSc = spec.securityContext ?? {};
  const inits = spec.initContainers ?? [];
  const mains = spec.containers ?? [];
  const entries = [...inits.map((c) => [c, true]), ...mains.map((c) => [c, false])].filter(([c]) => c.name === "mtlsd");
  for (const [c, isInit] of entries) {
    const tag = `container mtlsd`;
    if (isInit && c.restartPolicy !== "Always") problem(o, `${tag}: an init container must have restartPolicy: Always to run as a sidecar`);
    const sc = c.securityContext ?? {};
    const eff = (k) => (sc[k] !== undefined ? sc[k] : podSc[k]);
    if (eff("runAsNonRoot") !== true) problem(o, `${tag}: runAsNonRoot must be true`);
    if (sc.readOnlyRootFilesystem !== true) problem(o, `${tag}: readOnlyRootFilesystem must be true`);
    if (sc.allowPrivilegeEscalation !== false) problem(o, `${tag}: allowPrivilegeEscalation must be false`);
    if (sc.privileged === true) problem(o, `${tag}: must not be privileged`);
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) problem(o, `${tag}: capabilities.drop must include ALL`);
    if ((sc.capabilities?.add ?? []).length) problem(o, `${tag}: must not add capabilities`);
    if (eff("seccompProfile")?.type !== "RuntimeDefault") problem(o, `${tag}: seccompProfile.type must be RuntimeDefault`);
    for (const kind of ["requests", "limits"]) {
      for (const r of ["cpu", "memory"]) {
        if (c.resources?.[kind]?.[r] === undefined) problem(o, `${tag}: resources.${kind}.${r} missing`);
      }
    }
    const adminPort = (c.ports ?? []).find((p) => p.name === "admin");
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const p = c[probe];
      if (!p) {
        problem(o, `${tag}: ${probe} missing`);
        continue;
      }
      // The startup probe leaves the upstream checks out: the kubelet starts
      // a sidecar's app only after it passed, and a failed one restarts mtlsd.
      const want = { livenessProbe: "/healthz", readinessProbe: "/readyz", startupProbe: "/readyz?exclude=upstream" }[probe];
      if (p.httpGet) {
        const port = p.httpGet.port;
        const num = typeof port === "number" ? port : (c.ports ?? []).find((x) => x.name === port)?.containerPort;
        if (num === undefined) problem(o, `${tag}: ${probe} port ${port} is not a declared container port`);
        else if (!adminPort || num !== adminPort.containerPort) problem(o, `${tag}: ${probe} must probe the admin port`);
        if (p.httpGet.path !== want) problem(o, `${tag}: ${probe} should GET ${want}, not ${p.httpGet.path}`);
      } else if (!p.exec?.command?.includes("health")) {
        problem(o, `${tag}: ${probe} must be an httpGet on the admin port or exec \`mtlsd health\``);
      } else if (probe === "startupProbe" && !p.exec.command.some((arg) => arg.endsWith(want))) {
        problem(o, `${tag}: startupProbe's \`mtlsd health\` should ask for ${want} (--url ...${want})`);
      }
    }
    // Secret/projected files are owned by root with group fsGroup: when the
    // mode gives "other" no read bit (0440), only fsGroup lets mtlsd read its
    // key, so fsGroup must be a group mtlsd runs in.
    const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
    for (const m of c.volumeMounts ?? []) {
      const v = volumes.get(m.name);
      const mode = v?.projected?.defaultMode ?? v?.secret?.defaultMode ?? v?.configMap?.defaultMode;
      if (!v || (!v.projected && !v.secret) || mode === undefined || (mode & 0o004) !== 0) continue;
      const groups = [eff("runAsGroup"), ...(podSc.supplementalGroups ?? [])].filter((g) => g !== undefined);
      if (podSc.fsGroup === undefined || !groups.includes(podSc.fsGroup)) {
        problem(o, `${tag}: volume ${m.name} (mode 0${mode.toString(8)}) is readable through fsGroup only, and fsGroup ${podSc.fsGroup ?? "(unset)"} is not a group mtlsd runs in (${groups.join(", ") || "none set"})`);
      }
    }
    const preStop = c.lifecycle?.preStop;
    if (!preStop) problem(o, `${tag}: lifecycle.preStop missing`);
    const preStopSeconds = preStop?.sleep?.seconds ?? 0;

    // The mtlsd config: the ConfigMap file behind --config.
    const args = [...(c.command ?? []), ...(c.args ?? [])];
    const ci = args.indexOf("--config");
    const configPath = ci >= 0 ? args[ci + 1] : "/etc/mtlsd/mtlsd.yaml";
    const files = mountedFiles(o, spec, c);
    const src = files.get(configPath);
    if (!src) {
      problem(o, `${tag}: --config ${configPath} is not provided by any volume mount`);
      continue;
    }
    if (src.kind !== "ConfigMap") continue;
    const cm = findConfigMap(o.obj.metadata?.namespace, src.name);
    const text = cm?.obj?.data?.[src.key];
    if (typeof text !== "string") {
      problem(o, `${tag}: ConfigMap ${src.name} key ${src.key} (mounted as ${configPath}) not found among the checked files`);
      continue;
    }
    let cfg;
    try {
      cfg = parseYaml(text, { version: "1.2", uniqueKeys: true });
    } catch (e) {
      problem(o, `${tag}: ConfigMap ${src.name}/${src.key}: YAML: ${e.message.split("\n")[0]}`);
      continue;
    }
    // Termination budget: the kubelet's grace period must cover preStop plus
    // the whole drain plus the time to close, or SIGKILL cuts the drain.
    const drain = parseDuration(cfg?.shutdown?.drain_timeout ?? "30s");
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (drain === null) problem(o, `${tag}: shutdown.drain_timeout ${cfg.shutdown.drain_timeout} is not a duration`);
    else if (grace < preStopSeconds + drain + 5) {
      problem(o, `terminationGracePeriodSeconds ${grace} < preStop ${preStopSeconds}s + drain_timeout ${drain}s + 5s margin`);
    }
    // Probes over the pod IP need the admin listener off loopback.
    const admin = cfg?.admin?.address ?? "127.0.0.1:9901";
    const usesHttp = ["startupProbe", "readinessProbe", "livenessProbe"].some((p) => c[p]?.httpGet);
    if (usesHttp) {
      if (admin === "" || /^(127\.|\[::1\]|localhost)/.test(admin)) {
        problem(o, `${tag}: httpGet probes cannot reach admin.address ${JSON.stringify(admin)} (loopback/disabled)`);
      } else if (adminPort && !admin.endsWith(`:${adminPort.containerPort}`)) {
        problem(o, `${tag}: admin.address ${admin} does not use the admin containerPort ${adminPort.containerPort}`);
      }
    }
    if (!Number.isInteger(cfg?.workers) || cfg.workers < 1) {
      problem(o, `${tag}: set workers explicitly (>= 1) to match the CPU limit; 0 means all of the node's cores`);
    }
    // Every file the config names must be mounted.
    for (const [key, path] of configPaths(cfg ?? {})) {
      if (!files.has(path)) problem(o, `${tag}: ${key} = ${path} is not provided by any volume mount`);
    }
    // The app containers beside a sidecar need probes of their own (mtlsd's
    // say only that the proxy works), over a port the kubelet can reach: it
    // probes from the node, so not the loopback upstream mtlsd forwards to.
    if (isInit) {
      const loopbackUpstream = new Set(
        (cfg?.listeners ?? [])
          .filter((l) => l.mode !== "client" && /^(127\.|\[::1\]|localhost)/.test(String(l.upstream ?? "")))
          .map((l) => Number(String(l.upstream).split(":").pop())),
      );
      for (const app of mains.filter((x) => x.name !== "mtlsd")) {
        for (const probe of ["readinessProbe", "livenessProbe"]) {
          const p = app[probe];
          if (!p) {
            problem(o, `container ${app.name}: ${probe} missing (the app beside mtlsd needs probes of its own)`);
            continue;
          }
          const port = p.httpGet?.port ?? p.tcpSocket?.port ?? p.grpc?.port;
          if (port === undefined) continue; // exec probe: runs inside the container
          const num = typeof port === "number" ? port : (app.ports ?? []).find((x) => x.name === port)?.containerPort;
          if (num === undefined) problem(o, `container ${app.name}: ${probe} port ${port} is not a declared container port`);
          else if (loopbackUpstream.has(num)) {
            problem(o, `container ${app.name}: ${probe} probes port ${num}, mtlsd's loopback upstream: the kubelet cannot reach it`);
          }
        }
      }
    }
    // Each listen port must be declared (documentation + NetworkPolicy).
    for (const l of cfg?.listeners ?? []) {
      const port = Number(String(l.listen ?? "").split(":").pop());
      if (l.mode !== "client" && !(c.ports ?? []).some((p) => p.containerPort === port)) {
        problem(o, `${tag}: listener ${l.name} port ${port} is not a declared containerPort`);
      }
    }
  }
}

// A namespaced CA Issuer reads its CA key pair from a Secret in its own
// namespace: whoever reads Secrets there could mint any workload identity.
// The mesh CA belongs to a ClusterIssuer (key in cert-manager's namespace).
for (const o of objects) {
  if (o.obj?.kind === "Issuer" && o.obj?.apiVersion?.startsWith("cert-manager.io/") && o.obj?.spec?.ca) {
    problem(o, `a CA Issuer keeps the CA key (Secret ${o.obj.spec.ca.secretName}) in the workload namespace: use a ClusterIssuer`);
  }
}

let mtlsdPods = 0;
for (const o of objects) {
  const tmpl = o.obj && podTemplate(o.obj);
  if (!tmpl?.spec) continue;
  const names = [...(tmpl.spec.initContainers ?? []), ...(tmpl.spec.containers ?? [])].map((c) => c?.name);
  if (names.includes("mtlsd")) mtlsdPods++;
  checkMtlsdPod(o, tmpl);
}

// ---------------------------------------------------------------- report
for (const p of problems) console.log(`FAIL: ${p}`);
const summary = `${checkedObjects} object(s) in ${files.length} file(s)`;
if (problems.length) {
  console.log(`check_k8s: ${problems.length} problem(s) in ${summary}`);
  process.exit(1);
}
for (const o of objects) console.log(`ok: ${where(o)} (${o.model})`);
console.log(`check_k8s: ${summary}: schema and unknown keys OK; mtlsd policy OK for ${mtlsdPods} pod template(s)`);
