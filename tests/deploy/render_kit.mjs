// Offline renderer for the rollout kit (deploy/kustomize, deploy/helm), run by
// check_kit.sh. Neither kustomize nor helm installs here (no Debian package;
// their npm wrappers download release binaries at install time, which cannot
// reach the network), so this implements exactly the parts of each that the
// kit uses and refuses everything else, so the kit cannot drift onto a
// feature that was never rendered in CI:
//
//   node render_kit.mjs kustomize DIR
//     kustomize v5 semantics for: Kustomization {namespace, resources,
//     components, patches, replacements} and Component {resources, patches,
//     replacements}. Order as kustomize's: resources, then each component
//     (its resources join the parent's, then its patches, then its
//     replacements run over all of them), then the kustomization's own
//     patches, namespace, replacements. Patches are strategic-merge patches
//     (maps merge, `null` deletes, lists of containers/volumes/env/... merge by
//     their Kubernetes merge key, the patch's items first and then the
//     target's others, as kustomize orders them; other lists are replaced),
//     selected by `target` {kind, name, labelSelector} or, without one, by the
//     patch's own kind and name. Replacements: one source object, fieldPath
//     with numeric list indexes and [key=value] list selectors, options
//     {delimiter, index, create}; a target's delimiter index below 0 prepends
//     the value, one past the last part appends it (kustomize's prefix and
//     suffix); a string copied into a field the replacement creates loses its
//     quotes as in kustomize ("true" becomes a boolean, kustomize#5124).
//     check_kit.sh compares this renderer with `kubectl kustomize` when a
//     kubectl with kustomize v5 is on PATH.
//
//   node render_kit.mjs helm CHART --release NAME --namespace NS [-f VALUES]...
//     `helm template` semantics for the values (values.yaml, then each -f,
//     maps merged deeply, `null` deletes) and the objects .Values, .Release,
//     .Chart, .Template. Templates run in Go's own text/template engine
//     (compiled to WebAssembly: npm @evertdespiegeleer/go-template), with the
//     chart's _*.tpl partials defined. That engine has text/template's
//     built-in functions only, not Helm's or sprig's, so the chart is written
//     with those alone (which Helm has too). A `<no value>` in the output
//     (Helm would print nothing) is an error: a value the chart forgot; so is
//     Go fmt's `%!verb(type=value)` (a verb for another type, which Helm
//     would print as it is).
//
// Prints the rendered objects as one YAML stream. Exit 1 with a message on
// anything unsupported or wrong.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parse as parseGoTemplate } from "@evertdespiegeleer/go-template";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";

class RenderError extends Error {}
const die = (msg) => {
  throw new RenderError(msg);
};
const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const clone = (v) => structuredClone(v);

function readDocs(file) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  const out = [];
  docs.forEach((d, i) => {
    if (d.errors.length) die(`${file}: doc ${i + 1}: ${d.errors[0].message.split("\n")[0]}`);
    const v = d.toJS({ maxAliasCount: 0 });
    if (v !== null && v !== undefined) out.push(v);
  });
  return out;
}

function onlyKeys(obj, allowed, where) {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) die(`${where}: '${k}' is not supported by render_kit.mjs (supported: ${allowed.join(", ")})`);
  }
}

// ------------------------------------------------------------------ kustomize

const CLUSTER_SCOPED = new Set([
  "Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
  "PersistentVolume", "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
  "MutatingWebhookConfiguration", "Bundle",
]);

const id = (o) => `${o.kind}/${o.metadata?.namespace ?? "~"}/${o.metadata?.name}`;

function loadKustomization(dir, kind) {
  const file = ["kustomization.yaml", "kustomization.yml", "Kustomization"].map((f) => join(dir, f)).find(existsSync);
  if (!file) die(`${dir}: no kustomization.yaml`);
  const [k] = readDocs(file);
  if (!isMap(k) || k.kind !== kind) die(`${file}: expected kind: ${kind}, got ${k?.kind}`);
  const api = kind === "Component" ? "kustomize.config.k8s.io/v1alpha1" : "kustomize.config.k8s.io/v1beta1";
  if (k.apiVersion !== api) die(`${file}: apiVersion must be ${api}`);
  const keys = ["apiVersion", "kind", "resources", "components", "patches", "replacements"];
  onlyKeys(k, kind === "Component" ? keys.filter((x) => x !== "components") : [...keys, "namespace"], file);
  return { k, file };
}

function addResources(acc, dir, list, where) {
  for (const r of list ?? []) {
    const path = resolve(dir, r);
    if (!existsSync(path)) die(`${where}: resource ${r} not found`);
    const objs = statSync(path).isDirectory() ? buildKustomization(path) : readDocs(path);
    for (const o of objs) {
      if (!isMap(o) || !o.kind || !o.metadata?.name) die(`${path}: every resource needs kind and metadata.name`);
      if (acc.some((x) => id(x) === id(o))) die(`${path}: ${id(o)} is already defined (kustomize refuses duplicates)`);
      acc.push(o);
    }
  }
}

// Kubernetes' patchMergeKey for the lists the kit patches.
function mergeKey(field, items) {
  if (["containers", "initContainers", "ephemeralContainers", "volumes", "env", "imagePullSecrets"].includes(field)) return "name";
  if (field === "volumeMounts") return "mountPath";
  if (field === "ports") return items.every((i) => isMap(i) && "containerPort" in i) ? "containerPort" : "port";
  return null;
}

function strategicMerge(target, patch, path) {
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith("$")) die(`${path}/${k}: strategic-merge directives are not supported`);
    if (v === null) {
      delete target[k];
    } else if (isMap(v) && isMap(target[k])) {
      strategicMerge(target[k], v, `${path}/${k}`);
    } else if (Array.isArray(v) && Array.isArray(target[k]) && mergeKey(k, v)) {
      // kustomize's order (kyaml merge2 with ListIncreaseDirection prepend):
      // the patch's items first, in the patch's order (each merged into the
      // target's item of the same key), then the target's other items in
      // their order. So an added init container comes before the app's own.
      const key = mergeKey(k, v);
      const merged = [];
      for (const item of v) {
        if (!isMap(item) || item[key] === undefined) die(`${path}/${k}: every item needs ${key}`);
        const existing = target[k].find((t) => isMap(t) && t[key] === item[key]);
        if (existing) strategicMerge(existing, item, `${path}/${k}[${item[key]}]`);
        merged.push(existing ?? clone(item));
      }
      target[k] = [...merged, ...target[k].filter((t) => !merged.includes(t))];
    } else {
      target[k] = clone(v);
    }
  }
}

function matchesLabels(o, selector) {
  const labels = o.metadata?.labels ?? {};
  return selector.split(",").every((term) => {
    const [k, v] = term.split("=").map((s) => s.trim());
    if (v === undefined) die(`labelSelector '${selector}': only key=value terms are supported`);
    return labels[k] === v;
  });
}

function applyPatches(acc, dir, patches, where) {
  for (const [i, p] of (patches ?? []).entries()) {
    const at = `${where}: patches[${i}]`;
    onlyKeys(p, ["path", "patch", "target"], at);
    const docs = p.path ? readDocs(resolve(dir, p.path)) : [parseYaml(p.patch ?? die(`${at}: path or patch`))];
    if (docs.length !== 1 || !isMap(docs[0])) die(`${at}: one strategic-merge patch document expected (JSON 6902 patches are not supported)`);
    const patch = docs[0];
    let targets;
    if (p.target) {
      onlyKeys(p.target, ["kind", "name", "namespace", "labelSelector"], `${at}.target`);
      targets = acc.filter(
        (o) =>
          (!p.target.kind || o.kind === p.target.kind) &&
          (!p.target.name || new RegExp(`^(?:${p.target.name})$`).test(o.metadata.name)) &&
          (!p.target.namespace || o.metadata.namespace === p.target.namespace) &&
          (!p.target.labelSelector || matchesLabels(o, p.target.labelSelector)),
      );
    } else {
      targets = acc.filter(
        (o) =>
          o.kind === patch.kind && o.metadata.name === patch.metadata?.name &&
          (patch.metadata?.namespace === undefined || o.metadata.namespace === patch.metadata.namespace),
      );
      if (targets.length !== 1) die(`${at}: ${patch.kind}/${patch.metadata?.name} matches ${targets.length} resources, kustomize needs exactly one`);
    }
    for (const o of targets) {
      // With a target, kustomize applies the patch under the target's own
      // identity: the patch's name and namespace are ignored.
      const body = clone(patch);
      delete body.apiVersion;
      delete body.kind;
      if (body.metadata) {
        delete body.metadata.name;
        delete body.metadata.namespace;
      }
      strategicMerge(o, body, id(o));
    }
  }
}

// A fieldPath's parts: split at dots outside [...] (kustomize's
// SmarterPathSplitter), so `volumes.[name=a.b].projected` is three parts.
function splitPath(fieldPath) {
  const parts = [];
  let cur = "";
  let depth = 0;
  for (const ch of fieldPath) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (ch === "." && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

// A part: a map key, a numeric list index, or [key=value]: the list item whose
// key has that value (kustomize's list selector). Returns the list index for
// the last two.
function step(node, part, where) {
  const sel = /^\[([^=\]]+)=([^\]]*)\]$/.exec(part);
  if (sel) {
    if (!Array.isArray(node)) die(`${where}: ${part} on something other than a list`);
    const i = node.findIndex((x) => isMap(x) && String(x[sel[1]]) === sel[2]);
    return i < 0 ? undefined : i;
  }
  return Array.isArray(node) ? Number(part) : part;
}

function walkPath(obj, fieldPath, create, where) {
  const parts = splitPath(fieldPath);
  if (parts.some((x) => x === "" || /[*]/.test(x) || (/[[\]]/.test(x) && !/^\[[^=\]]+=[^\]]*\]$/.test(x)))) {
    die(`${where}: fieldPath ${fieldPath}: only dotted names, numeric indexes and [key=value] are supported`);
  }
  let node = obj;
  for (const [i, part] of parts.slice(0, -1).entries()) {
    const key = step(node, part, where);
    let next = key === undefined ? undefined : node?.[key];
    if (next === undefined) {
      if (!create || key === undefined) return null;
      next = /^\d+$/.test(parts[i + 1]) || parts[i + 1].startsWith("[") ? [] : {};
      node[key] = next;
    }
    node = next;
  }
  const key = step(node, parts.at(-1), where);
  return key === undefined ? null : { node, key };
}

function applyReplacements(acc, list, where) {
  for (const [i, r] of (list ?? []).entries()) {
    const at = `${where}: replacements[${i}]`;
    onlyKeys(r, ["source", "targets"], at);
    onlyKeys(r.source, ["kind", "name", "namespace", "fieldPath", "options"], `${at}.source`);
    const sel = (o, s) => (!s.kind || o.kind === s.kind) && (!s.name || o.metadata.name === s.name) && (!s.namespace || o.metadata.namespace === s.namespace);
    const sources = acc.filter((o) => sel(o, r.source));
    if (sources.length !== 1) die(`${at}: source ${JSON.stringify(r.source)} matches ${sources.length} resources, kustomize needs exactly one`);
    const fp = r.source.fieldPath ?? "metadata.name";
    const loc = walkPath(sources[0], fp, false, at);
    let value = loc?.node?.[loc.key];
    // kustomize refuses a missing or empty source field alike.
    const empty = value === undefined || value === null || value === "" || (typeof value === "object" && !Object.keys(value).length);
    if (empty) die(`${at}: source ${id(sources[0])} has no ${fp} (or it is empty)`);
    if (r.source.options) {
      onlyKeys(r.source.options, ["delimiter", "index"], `${at}.source.options`);
      const parts = String(value).split(r.source.options.delimiter);
      const idx = r.source.options.index ?? 0;
      if (idx < 0 || idx >= parts.length) die(`${at}: source options.index ${idx} is out of bounds for ${value}`);
      value = parts[idx];
    }
    for (const [j, t] of (r.targets ?? []).entries()) {
      const tat = `${at}.targets[${j}]`;
      onlyKeys(t, ["select", "fieldPaths", "options"], tat);
      onlyKeys(t.select ?? {}, ["kind", "name", "namespace"], `${tat}.select`);
      onlyKeys(t.options ?? {}, ["delimiter", "index", "create"], `${tat}.options`);
      for (const o of acc.filter((x) => sel(x, t.select ?? {}))) {
        for (const f of t.fieldPaths ?? []) {
          const where2 = `${tat}: ${id(o)} ${f}`;
          const tl = walkPath(o, f, t.options?.create === true, where2);
          if (!tl || (tl.node[tl.key] === undefined && t.options?.create !== true)) die(`${where2}: no such field (and options.create is not set)`);
          if (t.options?.delimiter !== undefined) {
            if (isMap(value) || Array.isArray(value)) die(`${where2}: a delimiter works on scalars only`);
            if (tl.node[tl.key] === undefined) die(`${where2}: a delimiter on a field the replacement creates is not supported`);
            const parts = String(tl.node[tl.key] ?? "").split(t.options.delimiter);
            const idx = t.options.index ?? 0;
            // As kustomize: below 0 prepends, past the last part appends.
            if (idx < 0) parts.unshift(String(value));
            else if (idx >= parts.length) parts.push(String(value));
            else parts[idx] = String(value);
            tl.node[tl.key] = parts.join(t.options.delimiter);
          } else if (tl.node[tl.key] === undefined && typeof value === "string") {
            // A field the replacement creates gets the value as a plain
            // scalar, read back with YAML 1.2's core schema: "true" becomes a
            // boolean, "8080" a number (kustomize#5124). A field that exists
            // keeps its string.
            const plain = parseYaml(value);
            tl.node[tl.key] = plain === null || ["boolean", "number"].includes(typeof plain) ? plain : value;
          } else {
            tl.node[tl.key] = clone(value);
          }
        }
      }
    }
  }
}

function buildKustomization(dir) {
  const { k, file } = loadKustomization(dir, "Kustomization");
  const acc = [];
  addResources(acc, dir, k.resources, file);
  for (const c of k.components ?? []) {
    const cdir = resolve(dir, c);
    const comp = loadKustomization(cdir, "Component");
    addResources(acc, cdir, comp.k.resources, comp.file);
    applyPatches(acc, cdir, comp.k.patches, comp.file);
    applyReplacements(acc, comp.k.replacements, comp.file);
  }
  applyPatches(acc, dir, k.patches, file);
  if (k.namespace) {
    for (const o of acc) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  applyReplacements(acc, k.replacements, file);
  return acc;
}

// ----------------------------------------------------------------------- helm

function coalesce(base, over) {
  const out = clone(base);
  for (const [k, v] of Object.entries(over ?? {})) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = coalesce(out[k], v);
    else out[k] = clone(v);
  }
  return out;
}

async function goTemplate(text, ctx, where) {
  try {
    return await parseGoTemplate(text, ctx);
  } catch (e) {
    // The wrapper keeps only part of some messages; the engine's own
    // function (defined once the first call has loaded it) has them whole.
    const raw = typeof globalThis.Render === "function" ? globalThis.Render(text, JSON.stringify(ctx)) : "";
    die(`${where}: ${raw.split("\n")[0] || e.message}`);
  }
}

async function helmTemplate(chartDir, release, namespace, valueFiles) {
  const chart = parseYaml(readFileSync(join(chartDir, "Chart.yaml"), "utf8"));
  if (chart.apiVersion !== "v2") die(`${chartDir}/Chart.yaml: apiVersion must be v2 (Helm 3)`);
  if (chart.name !== basename(resolve(chartDir))) die(`${chartDir}/Chart.yaml: name ${chart.name} differs from the directory name`);
  if (chart.dependencies?.length) die(`${chartDir}: chart dependencies are not supported`);
  let values = parseYaml(readFileSync(join(chartDir, "values.yaml"), "utf8")) ?? {};
  for (const f of valueFiles) values = coalesce(values, parseYaml(readFileSync(f, "utf8")) ?? {});
  const tdir = join(chartDir, "templates");
  const files = readdirSync(tdir).sort();
  for (const f of files) {
    if (!/^(_.*\.tpl|[^_].*\.yaml|NOTES\.txt)$/.test(f)) die(`${tdir}/${f}: expected _*.tpl partials, *.yaml templates or NOTES.txt`);
  }
  const partials = files.filter((f) => f.startsWith("_")).map((f) => readFileSync(join(tdir, f), "utf8")).join("");
  // Helm never prints a partial's top-level text; here the partials share the
  // template's parse, so they must have none (only defines and comments).
  if ((await goTemplate(partials, {}, `${tdir}/_*.tpl`)).trim() !== "") die(`${tdir}/_*.tpl: text outside {{ define }}`);
  const out = [];
  for (const f of files.filter((x) => x.endsWith(".yaml") && !x.startsWith("_"))) {
    const ctx = {
      Values: values,
      Release: { Name: release, Namespace: namespace, Service: "Helm", IsInstall: true, IsUpgrade: false, Revision: 1 },
      Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion, Description: chart.description },
      Template: { Name: `${chart.name}/templates/${f}`, BasePath: `${chart.name}/templates` },
    };
    const text = await goTemplate(partials + readFileSync(join(tdir, f), "utf8"), ctx, `${tdir}/${f}`);
    if (text.includes("<no value>")) {
      const line = text.split("\n").findIndex((l) => l.includes("<no value>")) + 1;
      die(`${tdir}/${f}: output line ${line} has <no value>: a value the chart does not define`);
    }
    // Go's fmt writes a verb it cannot apply to a value's type as
    // %!verb(type=value) (printf "%q" on a number): Helm would print that
    // text, a string that then passes every schema check.
    const fmtError = text.split("\n").findIndex((l) => l.includes("%!"));
    if (fmtError >= 0) die(`${tdir}/${f}: output line ${fmtError + 1} has a Go fmt error: ${text.split("\n")[fmtError].trim()}`);
    let docs;
    try {
      docs = parseAllDocuments(text, { uniqueKeys: true });
    } catch (e) {
      die(`${tdir}/${f}: rendered text is not YAML: ${e.message}`);
    }
    docs.forEach((d, i) => {
      if (d.errors.length) die(`${tdir}/${f}: rendered doc ${i + 1}: ${d.errors[0].message.split("\n")[0]}\n${text}`);
      const v = d.toJS();
      if (v !== null && v !== undefined) out.push(v);
    });
  }
  return out;
}

// ----------------------------------------------------------------------- main

try {
  const [mode, target, ...rest] = process.argv.slice(2);
  let objs;
  if (mode === "kustomize" && target && rest.length === 0) {
    objs = buildKustomization(resolve(target));
  } else if (mode === "helm" && target) {
    let release, namespace;
    const valueFiles = [];
    for (let i = 0; i < rest.length; i += 2) {
      const [opt, val] = [rest[i], rest[i + 1]];
      if (val === undefined) die(`${opt} needs a value`);
      if (opt === "--release") release = val;
      else if (opt === "--namespace") namespace = val;
      else if (opt === "-f") valueFiles.push(val);
      else die(`unknown option ${opt}`);
    }
    if (!release || !namespace) die("helm mode needs --release NAME --namespace NS");
    objs = await helmTemplate(target, release, namespace, valueFiles);
  } else {
    console.error("usage: node render_kit.mjs kustomize DIR | helm CHART --release NAME --namespace NS [-f VALUES]...");
    process.exit(2);
  }
  process.stdout.write(objs.map((o) => stringify(o, { version: "1.1", lineWidth: 0 })).join("---\n"));
} catch (e) {
  if (!(e instanceof RenderError)) throw e;
  console.error(`render_kit: ${e.message}`);
  process.exit(1);
}
