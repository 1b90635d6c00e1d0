#!/usr/bin/python3
"""Extract every mtlsd config shipped in deploy/ and config/ so `mtlsd check` can run on it.

  extract_configs.py --pki PKI_DIR --out OUT_DIR [--root REPO] [--loopback] [--mtlsd BINARY]

Finds mtlsd configurations in the repository's YAML files under deploy/ and
config/: plain config files (a top-level mapping with `listeners`, or any
non-Kubernetes mapping in a file named *mtlsd*.yaml or under config/) and
ConfigMap data entries (key *.yaml/*.yml) that hold one. Each is written to
OUT_DIR with every file it names re-pointed at the test PKI that
scripts/gen-pki.sh writes to PKI_DIR:

  server-mode listener  tls.cert/key          -> server.crt / server.key
                        + key_password_file   -> server-enc.key + server-enc.pass
                        tls.pkcs12 (+ password) -> server.p12 (+ server.p12.pass)
  client-mode listener  tls.cert/key          -> client.crt / client.key
                        + key_password_file   -> client-enc.crt/.key + client-enc.pass
                        tls.pkcs12 (+ password) -> client.p12 (+ client.p12.pass)
  client_auth.ca / server_auth.ca [i]         -> ca.crt, int.crt, ca.crt, ...
  revocation.crl_files [i]                    -> crl.pem, int-crl.pem, crl.pem, ...

Everything else is kept as written, including how each scalar was quoted
(YAML 1.1 tools would otherwise turn `off` into `false`), so what is checked
is what ships. --loopback additionally points admin and listen addresses at
127.0.0.1:0 and upstream host names at 127.0.0.1, for tests that start the
daemon rather than only check it.

Prints one "OUT_FILE<TAB>SOURCE" line per config (also written to
OUT_DIR/index.tsv). With --mtlsd BINARY, runs `BINARY check --config` on each
and exits 1 if any is rejected or draws a warning (its FILE:LINE:COL lines are
shown); a missing binary is an error (exit 2), not a pass. Exit 1 also when
nothing is found or a config names a file the PKI does not provide.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

STR_TAG = "tag:yaml.org,2002:str"


class ExtractError(Exception):
    pass


def get(node, key):
    """Value node for `key` in a MappingNode, or None."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return v
    return None


def keys(node):
    return [k.value for k, _ in node.value if isinstance(k, ScalarNode)] if isinstance(node, MappingNode) else []


def scalar(node, default=""):
    return node.value if isinstance(node, ScalarNode) else default


def set_scalar(node, value):
    """Replace a scalar's text in place; keep its quoting style."""
    node.value = value
    node.tag = STR_TAG


def is_mtlsd_config(node, named_mtlsd=False):
    """A mapping with `listeners`; or, when its file/ConfigMap key is named
    like an mtlsd config, any mapping that is not a Kubernetes object or a
    Prometheus rule file (so a typo'd `listeners` is still checked, not
    skipped)."""
    if not isinstance(node, MappingNode):
        return False
    k = set(keys(node))
    if "listeners" in k:
        return True
    return named_mtlsd and not k & {"apiVersion", "kind", "groups", "rule_files"}


class Rewriter:
    def __init__(self, pki: pathlib.Path, loopback: bool):
        self.pki = pki
        self.loopback = loopback
        self.changes = []

    def pki_file(self, name, what):
        path = self.pki / name
        if not path.is_file():
            raise ExtractError(f"{what}: the test PKI has no {name} (looked in {self.pki})")
        return str(path)

    def point(self, node, name, what):
        if isinstance(node, ScalarNode) and node.value:
            new = self.pki_file(name, what)
            self.changes.append(f"{what}: {node.value} -> {new}")
            set_scalar(node, new)

    def rewrite(self, cfg):
        admin = get(cfg, "admin")
        if self.loopback and admin is not None:
            addr = get(admin, "address")
            if isinstance(addr, ScalarNode) and addr.value:
                set_scalar(addr, "127.0.0.1:0")
        listeners = get(cfg, "listeners")
        if not isinstance(listeners, SequenceNode) or not listeners.value:
            raise ExtractError("`listeners` is not a non-empty list")
        for i, lst in enumerate(listeners.value):
            name = scalar(get(lst, "name"), f"#{i}")
            mode = scalar(get(lst, "mode"), "server")
            role = "client" if mode == "client" else "server"
            where = f"listeners[{name}]"
            tls = get(lst, "tls")
            if tls is not None:
                encrypted = bool(scalar(get(tls, "key_password_file")))
                if encrypted:
                    self.point(get(tls, "key"), f"{role}-enc.key", f"{where}.tls.key")
                    self.point(get(tls, "key_password_file"), f"{role}-enc.pass", f"{where}.tls.key_password_file")
                    # The client's encrypted key has its own certificate;
                    # the server's is server.key re-encrypted.
                    cert = "client-enc.crt" if role == "client" else "server.crt"
                    self.point(get(tls, "cert"), cert, f"{where}.tls.cert")
                else:
                    self.point(get(tls, "cert"), f"{role}.crt", f"{where}.tls.cert")
                    self.point(get(tls, "key"), f"{role}.key", f"{where}.tls.key")
                self.point(get(tls, "pkcs12"), f"{role}.p12", f"{where}.tls.pkcs12")
                self.point(get(tls, "pkcs12_password_file"), f"{role}.p12.pass", f"{where}.tls.pkcs12_password_file")
            for section in ("client_auth", "server_auth"):
                ca = get(get(lst, section), "ca")
                if isinstance(ca, SequenceNode):
                    for j, item in enumerate(ca.value):
                        self.point(item, ("ca.crt", "int.crt")[j % 2], f"{where}.{section}.ca[{j}]")
                elif isinstance(ca, ScalarNode) and ca.value:
                    self.point(ca, "ca.crt", f"{where}.{section}.ca")
            crls = get(get(lst, "revocation"), "crl_files")
            if isinstance(crls, SequenceNode):
                for j, item in enumerate(crls.value):
                    self.point(item, ("crl.pem", "int-crl.pem")[j % 2], f"{where}.revocation.crl_files[{j}]")
            if self.loopback:
                listen = get(lst, "listen")
                if isinstance(listen, ScalarNode) and not listen.value.startswith("unix:"):
                    set_scalar(listen, "127.0.0.1:0")
                up = get(lst, "upstream")
                if isinstance(up, ScalarNode) and not up.value.startswith("unix:"):
                    host, _, port = up.value.rpartition(":")
                    if not re.fullmatch(r"\[[0-9a-fA-F:.]+\]|[0-9.]+", host):
                        set_scalar(up, f"127.0.0.1:{port}")


def find_configs(root: pathlib.Path, line_offsets=None):
    """Yield (source description, config node, origin file, (ConfigMap, key) or None).

    If line_offsets is a dict, it receives id(config node) -> the line in the
    origin file where the config text starts (0 for a plain file), so callers
    can report positions in the file a person edits."""
    files = []
    for top in ("deploy", "config"):
        base = root / top
        if base.is_dir():
            files += sorted(p for p in base.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                            # Helm templates are YAML only once rendered: check_kit.sh renders them.
                            and not (p.parent.name == "templates" and p.parent.parent.joinpath("Chart.yaml").is_file()))
    for path in files:
        rel = path.relative_to(root)
        try:
            docs = list(yaml.compose_all(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise ExtractError(f"{rel}: not valid YAML: {e}")
        for n, doc in enumerate(docs, 1):
            if doc is None:
                continue
            if is_mtlsd_config(doc, named_mtlsd="mtlsd" in path.name or rel.parts[0] == "config"):
                if line_offsets is not None:
                    line_offsets[id(doc)] = 0
                yield f"{rel}" + (f" (document {n})" if len(docs) > 1 else ""), doc, rel, None
                continue
            if scalar(get(doc, "kind")) != "ConfigMap":
                continue
            meta = get(doc, "metadata")
            cm = f"{scalar(get(meta, 'namespace'), 'default')}/{scalar(get(meta, 'name'), '?')}"
            data = get(doc, "data")
            for k in keys(data):
                if not k.endswith((".yaml", ".yml")):
                    continue
                text = scalar(get(data, k))
                try:
                    inner = yaml.compose(text, Loader=yaml.SafeLoader)
                except yaml.YAMLError as e:
                    raise ExtractError(f"{rel}: ConfigMap {cm} key {k}: not valid YAML: {e}")
                if is_mtlsd_config(inner, named_mtlsd="mtlsd" in k):
                    if line_offsets is not None:
                        # A block scalar's text starts on the line after `key: |`.
                        value = get(data, k)
                        line_offsets[id(inner)] = value.start_mark.line + (1 if value.style in ("|", ">") else 0)
                    yield f"{rel} (ConfigMap {cm}, key {k})", inner, rel, (cm, k)


def out_name(rel, cm):
    stem = str(rel).replace("/", "-")
    stem = re.sub(r"\.ya?ml$", "", stem)
    if cm:
        stem += "--" + cm[0].replace("/", "-") + "--" + re.sub(r"\.ya?ml$", "", cm[1])
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".yaml"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pki", required=True, type=pathlib.Path, help="output directory of scripts/gen-pki.sh")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="where to write the extracted configs")
    ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[2])
    ap.add_argument("--loopback", action="store_true", help="also bind 127.0.0.1:0 and resolve no host names")
    ap.add_argument("--mtlsd", help="run `MTLSD check --config` on every extracted config")
    ap.add_argument("--verbose", "-v", action="store_true", help="show every path rewrite")
    args = ap.parse_args()

    pki = args.pki.resolve()
    if not (pki / "ca.crt").is_file():
        print(f"FAIL: {pki} holds no ca.crt: run scripts/gen-pki.sh {args.pki} first", file=sys.stderr)
        return 2
    if args.mtlsd and not (os.path.isfile(args.mtlsd) and os.access(args.mtlsd, os.X_OK)):
        print(f"FAIL: {args.mtlsd}: no mtlsd binary to check with (build it first)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    out_dir = args.out.resolve()

    index, failed = [], 0
    try:
        for source, node, rel, cm in find_configs(args.root.resolve()):
            rw = Rewriter(pki, args.loopback)
            try:
                rw.rewrite(node)
            except ExtractError as e:
                print(f"FAIL: {source}: {e}")
                failed += 1
                continue
            target = out_dir / out_name(rel, cm)
            with open(target, "w", encoding="utf-8") as f:
                f.write(f"# extracted from {source} by tests/deploy/extract_configs.py\n")
                yaml.serialize(node, f, Dumper=yaml.SafeDumper, width=4096, allow_unicode=True)
            index.append((str(target), source))
            if args.verbose:
                for c in rw.changes:
                    print(f"  {c}", file=sys.stderr)
    except ExtractError as e:
        print(f"FAIL: {e}")
        return 1

    (out_dir / "index.tsv").write_text("".join(f"{t}\t{s}\n" for t, s in index), encoding="utf-8")
    for t, s in index:
        print(f"{t}\t{s}")
    if not index:
        print("FAIL: no mtlsd configuration found under deploy/ or config/")
        return 1

    if args.mtlsd:
        for target, source in index:
            proc = subprocess.run([args.mtlsd, "check", "--config", target],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            # A shipped config must also draw no warning: each one names something that
            # refuses clients or does not do what the operator meant.
            warnings = [line for line in proc.stdout.splitlines() if ": warning: " in line]
            if proc.returncode == 0 and not warnings:
                print(f"ok: mtlsd check: {source}")
            else:
                failed += 1
                why = f"exit {proc.returncode}" if proc.returncode else f"{len(warnings)} warning(s)"
                print(f"FAIL: mtlsd check ({why}): {source} [{target}]")
                for line in proc.stdout.splitlines():
                    print(f"    {line}")
        print(f"mtlsd check: {len(index) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
