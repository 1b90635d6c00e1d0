#!/usr/bin/python3
"""Contract check for the mtlsd configs we ship, without an mtlsd binary.

  config_keys.py                 every config in deploy/ and config/ (as extract_configs.py finds them)
  config_keys.py FILE...         these files (plain configs or manifests with mtlsd ConfigMaps)

Every key must be one that shared/interface.md defines (mtlsd rejects unknown
keys, but this runs before it is built and points at the line to fix), every
enumerated value one of the documented ones, durations and addresses in the
documented forms, and mode-specific sections on the right kind of listener
(client_auth/http on server mode, server_auth on client mode). One
"FILE:LINE: message" per problem; exit 1 if any.
"""
import pathlib
import re
import sys

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from extract_configs import find_configs  # noqa: E402

DURATION = re.compile(r"^\d+(ms|s|m|h)$")
ADDRESS = re.compile(r"^(unix:/.+|\[[0-9A-Fa-f:.]+\]:\d{1,5}|[A-Za-z0-9.-]+:\d{1,5})$")

# The key tree of shared/interface.md. A leaf is a validator name or a set of
# allowed values; a dict is a nested mapping; a list holds the item schema.
ALLOW = {k: "strlist" for k in (
    "spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units", "sha256_fingerprints",
    "email_sans")}
LISTENER = {
    "name": "str",
    "mode": {"server", "client"},
    "listen": "address",
    "upstream": "address",
    "max_connections": "int",
    "timeouts": {"handshake": "duration", "connect": "duration", "idle": "duration"},
    "tls": {
        "cert": "str", "key": "str", "key_password_file": "str",
        "pkcs12": "str", "pkcs12_password_file": "str",
        "min_version": {"1.2", "1.3"}, "max_version": {"1.2", "1.3"},
        "cipher_suites": "str", "ciphers": "str", "curves": "str",
        "alpn": "strlist", "session_resumption": "bool",
        "spiffe": {"workload_api": "str", "trust_domains": "strlist"},
    },
    "client_auth": {
        "mode": {"require", "optional", "none"},
        "ca": "strlist",
        "verify_depth": "int",
        "allow": ALLOW,
    },
    "server_auth": {"ca": "strlist", "server_name": "str", "verify_depth": "int", "allow": ALLOW,
                    "insecure_skip_verify": "bool"},
    "revocation": {
        "crl_files": "strlist",
        "crl_distribution_points": "bool",
        "crl_scope": {"leaf", "chain"},
        "ocsp": {"off", "leaf", "chain"},
        "ocsp_responder": "str",
        "ocsp_timeout": "duration",
        "on_unavailable": {"fail", "allow"},
        "crl_grace": "duration",
        "recheck_established": "bool",
        "stapling": "bool",
        "require_staple": "bool",
    },
    "proxy_protocol": {"off", "v2"},
    "http": {
        "forward_client_cert_details": {
            "sanitize", "forward_only", "append_forward", "sanitize_set", "always_forward_only"},
        "set_current_client_cert_details": ("enumlist", {"uri", "dns", "subject", "hash", "cert", "chain"}),
        "protocols": ("enumlist", {"h2", "http/1.1"}),
        "upstream_protocol": {"http/1.1", "h2c", "same"},
        "x_forwarded_for": {"append", "off"},
        "x_forwarded_proto": {"set", "off"},
        "max_concurrent_streams": "int",
        "stream_idle_timeout": "duration",
        "request_headers_timeout": "duration",
    },
}
CONFIG = {
    "admin": {"address": "address_or_empty"},
    "log": {"level": {"trace", "debug", "info", "warn", "error"}, "format": {"text", "json"}, "access_log": "bool"},
    "workers": "int",
    "reload": {"watch": "bool", "poll_interval": "duration"},
    "shutdown": {"drain_timeout": "duration"},
    "dns": {"servers": "strlist"},
    "listeners": [LISTENER],
}
SERVER_ONLY = ("client_auth", "http")
CLIENT_ONLY = ("server_auth",)


class Checker:
    def __init__(self, source, offset):
        self.source = source
        self.offset = offset
        self.problems = []

    def bad(self, node, msg):
        self.problems.append(f"{self.source}:{node.start_mark.line + 1 + self.offset}: {msg}")

    def leaf(self, node, spec, path):
        if isinstance(spec, tuple) and spec[0] == "enumlist":
            if not isinstance(node, SequenceNode):
                return self.bad(node, f"{path}: expected a list")
            for item in node.value:
                if not isinstance(item, ScalarNode) or item.value not in spec[1]:
                    self.bad(item, f"{path}: {getattr(item, 'value', '?')!r} is not one of {sorted(spec[1])}")
            return
        if isinstance(spec, set):
            if not isinstance(node, ScalarNode) or node.value not in spec:
                self.bad(node, f"{path}: {getattr(node, 'value', '?')!r} is not one of {sorted(spec)}")
            return
        if spec == "strlist":
            if not isinstance(node, SequenceNode) or not all(isinstance(i, ScalarNode) for i in node.value):
                self.bad(node, f"{path}: expected a list of strings")
            return
        if not isinstance(node, ScalarNode):
            return self.bad(node, f"{path}: expected a scalar")
        v = node.value
        if spec == "int" and not re.fullmatch(r"\d+", v):
            self.bad(node, f"{path}: {v!r} is not a non-negative integer")
        elif spec == "bool" and v not in ("true", "false"):
            self.bad(node, f"{path}: {v!r} is not true/false")
        elif spec == "duration" and not DURATION.match(v):
            self.bad(node, f"{path}: {v!r} is not a duration like 250ms, 10s, 5m, 1h")
        elif spec == "address" and not ADDRESS.match(v):
            self.bad(node, f"{path}: {v!r} is not HOST:PORT, [IPV6]:PORT or unix:/path")
        elif spec == "address_or_empty" and v != "" and not ADDRESS.match(v):
            self.bad(node, f"{path}: {v!r} is not HOST:PORT, [IPV6]:PORT, unix:/path or \"\"")

    def walk(self, node, spec, path):
        if isinstance(spec, dict):
            if not isinstance(node, MappingNode):
                return self.bad(node, f"{path or 'config'}: expected a mapping")
            seen = set()
            for k, v in node.value:
                key = k.value if isinstance(k, ScalarNode) else "?"
                sub = f"{path}.{key}" if path else key
                if key in seen:
                    self.bad(k, f"{sub}: duplicate key")
                seen.add(key)
                if key not in spec:
                    self.bad(k, f"{sub}: unknown key (not in shared/interface.md)")
                    continue
                self.walk(v, spec[key], sub)
            return
        if isinstance(spec, list):
            if not isinstance(node, SequenceNode):
                return self.bad(node, f"{path}: expected a list")
            names = set()
            for i, item in enumerate(node.value):
                self.walk(item, spec[0], f"{path}[{i}]")
                if spec[0] is LISTENER and isinstance(item, MappingNode):
                    self.listener(item, f"{path}[{i}]", names)
            return
        self.leaf(node, spec, path)

    def listener(self, node, path, names):
        fields = {k.value: v for k, v in node.value if isinstance(k, ScalarNode)}
        key_nodes = {k.value: k for k, _ in node.value if isinstance(k, ScalarNode)}
        name = fields.get("name")
        if not isinstance(name, ScalarNode) or not name.value:
            self.bad(node, f"{path}: a listener needs a name")
        elif name.value in names:
            self.bad(name, f"{path}.name: {name.value!r} is not unique")
        else:
            names.add(name.value)
        for required in ("listen", "upstream"):
            if required not in fields:
                self.bad(node, f"{path}: missing {required}")
        mode = fields.get("mode")
        mode = mode.value if isinstance(mode, ScalarNode) else "server"
        if mode not in ("server", "client"):
            return  # already reported; mode-specific rules would only add noise
        wrong = CLIENT_ONLY if mode == "server" else SERVER_ONLY
        for key in wrong:
            if key in fields:
                self.bad(key_nodes[key], f"{path}.{key}: only for mode: {'client' if mode == 'server' else 'server'}")


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    offsets = {}
    if len(sys.argv) > 1:
        configs = []
        for f in sys.argv[1:]:
            p = pathlib.Path(f).resolve()
            # find_configs looks under ROOT/{deploy,config}: give it a fake root.
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                (pathlib.Path(tmp) / "config").mkdir()
                (pathlib.Path(tmp) / "config" / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
                for source, node, rel, cm in find_configs(pathlib.Path(tmp), offsets):
                    configs.append((source.replace(str(rel), f), node))
    else:
        configs = [(source, node) for source, node, rel, cm in find_configs(root, offsets)]
    if not configs:
        print("FAIL: no mtlsd configuration found")
        return 1
    problems = []
    for source, node in configs:
        c = Checker(source.split(" (")[0], offsets.get(id(node), 0))
        c.walk(node, CONFIG, "")
        problems += c.problems
        if not c.problems:
            print(f"ok: {source}: keys and values as in shared/interface.md")
    for p in problems:
        print(f"FAIL: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
