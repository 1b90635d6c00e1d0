#!/usr/bin/python3
"""Start mtlsd with every shipped config and check what the deployment files rely on.

  check_live.py --mtlsd BINARY [--pki DIR]

Each config in deploy/ and config/ (extract_configs.py --loopback: test PKI,
every address on 127.0.0.1 with port 0) that `mtlsd check` accepts is run
under a test NOTIFY_SOCKET, as systemd's Type=notify would, and:

  * READY=1 arrives, and by then every listener accepts TCP connections
    (mtlsd.service's Type=notify);
  * `mtlsd health --url http://ADMIN/readyz` and `.../healthz` exit 0
    (the image's HEALTHCHECK, exec probes), and /readyz, /healthz and every
    path an mtlsd probe of deploy/kubernetes/ asks for answer 200 (the
    Kubernetes httpGet probes);
  * /metrics passes `promtool check metrics`, and every metric the alert rules
    (deploy/prometheus/alerts.yaml) use that this run can produce is exposed
    with the labels the rules aggregate and print;
  * SIGHUP gives RELOADING=1 then READY=1 and counts
    mtlsd_config_reloads_total{result="success"} (ExecReload);
  * SIGTERM gives STOPPING=1 and exit status 0 (KillSignal, drain).

Then each Deployment of deploy/kubernetes/ runs its mtlsd config with an
upstream_check whose upstream refuses connections, as a native sidecar's app
does before the kubelet starts it: the path of its startupProbe must answer
200 (else the app never starts and mtlsd is restarted every 30 s), that of its
readinessProbe 503.

Only loopback addresses are used; every process is stopped by this script.
Exit 1 with FAIL lines on any problem.
"""
import argparse
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Labels the alert rules aggregate by or print, per metric (shared/interface.md).
ALERT_LABELS = {
    "mtlsd_certificate_expiry_timestamp_seconds": {"listener", "role", "subject", "serial"},
    "mtlsd_connections_total": {"listener", "result"},
    "mtlsd_handshake_failures_total": {"listener", "reason"},
    "mtlsd_config_reloads_total": {"result"},
    "mtlsd_config_last_reload_successful": set(),
    "mtlsd_upstream_connect_failures_total": {"listener"},
    "mtlsd_upstream_up": {"listener"},  # additions section; only listeners with upstream_check
    "mtlsd_revocation_checks_total": {"listener", "method", "result"},
    "mtlsd_crl_next_update_timestamp_seconds": {"issuer"},
}


class Run:
    def __init__(self, binary, config, workdir):
        self.config = config
        self.lines = []
        self.changed = threading.Condition()  # notified for every line read
        self.notes = []
        self.sock_path = os.path.join(workdir, "notify.sock")
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path)
        self.proc = subprocess.Popen([binary, "run", "--config", config], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_notify(self, want, timeout):
        """Wait for a datagram containing the line `want`; return all seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode(errors="replace")
            except socket.timeout:
                break
            self.notes.append(msg)
            if want in msg.splitlines():
                return True
            if self.proc.poll() is not None:
                break
        return False

    def addresses(self, what):
        """host:port values logged for `what` (listening / admin listening)."""
        out = []
        for line in self.lines:
            if re.search(rf'(^|[" ]){re.escape(what)}(["]|\s)', line):
                m = re.search(r'address["=:]+"?([0-9.]+:\d+)', line)
                if m:
                    out.append(m.group(1))
        return out

    def start_ready(self):
        """Waits for READY=1, then for the admin listener's line: READY=1 can arrive before the
        reader thread took the lines written just before it. Returns (the admin address, None),
        or (None, what went wrong)."""
        if not self.wait_notify("READY=1", 15):
            return None, f"no READY=1 on NOTIFY_SOCKET within 15s (got {self.notes}); log: {self.lines[-5:]}"
        with self.changed:
            self.changed.wait_for(lambda: self.addresses("admin listening"), timeout=5)
            admins = self.addresses("admin listening")
        if not admins:
            return None, f"no 'admin listening' line: {self.lines[:6]}"
        return admins[0], None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def parse_exposition(text):
    """{metric name: [label-name sets of its samples]}"""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if m:
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
            samples.setdefault(m.group(1), []).append(labels)
    return samples


def mtlsd_probes():
    """[(manifest, namespace, its mtlsd config's ConfigMap, {probe: httpGet path})] of every
    Deployment of deploy/kubernetes/ with an mtlsd container (native sidecar or not)."""
    out = []
    for path in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or doc.get("kind") != "Deployment":
                continue
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                if c["name"] != "mtlsd":
                    continue
                configmaps = [s["configMap"]["name"] for v in spec.get("volumes", [])
                              for s in (v.get("projected") or {}).get("sources", []) if "configMap" in s]
                configmaps += [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
                paths = {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
                         if "httpGet" in c.get(p, {})}
                out.append((path.name, doc["metadata"]["namespace"], configmaps, paths))
    return out


def check_one(binary, config, source, workdir, problems):
    def bad(msg):
        problems.append(f"{source}: {msg}")
        print(f"FAIL: {source}: {msg}")

    run = Run(binary, config, workdir)
    try:
        admin, why = run.start_ready()
        if why:
            bad(why)
            return
        listeners = [a for a in run.addresses("listening") if a != admin]
        if not listeners:
            bad(f"could not find the bound listener addresses in the log: {run.lines[:6]}")
            return
        for addr in listeners:
            host, port = addr.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
            except OSError as e:
                bad(f"READY=1 was sent but listener {addr} refuses connections: {e}")
        for path in ("/readyz", "/healthz"):
            rc = subprocess.run([binary, "health", "--url", f"http://{admin}{path}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=15)
            if rc.returncode != 0:
                bad(f"`mtlsd health --url http://{admin}{path}` exited {rc.returncode}: {rc.stdout.strip()}")
        for path in sorted({"/readyz", "/healthz"} | {p for *_, paths in mtlsd_probes() for p in paths.values()}):
            status, body = http_get(f"http://{admin}{path}")
            if status != 200:
                bad(f"GET {path} answered {status}: {body.strip()[:200]}")
        # A reload, so that the reload counter has a sample.
        run.notes.clear()
        run.proc.send_signal(signal.SIGHUP)
        if not run.wait_notify("RELOADING=1", 10):
            bad(f"SIGHUP: no RELOADING=1 (got {run.notes})")
        elif not run.wait_notify("READY=1", 10):
            bad(f"SIGHUP: RELOADING=1 but no READY=1 after it (got {run.notes})")
        status, metrics = http_get(f"http://{admin}/metrics")
        if status != 200:
            bad(f"GET /metrics answered {status}")
            return
        if shutil.which("promtool"):
            pc = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if pc.returncode != 0:
                bad(f"promtool check metrics: {pc.stdout.strip()}")
        exposed = parse_exposition(metrics)
        alert_metrics = set(re.findall(r"\bmtlsd_[a-z_]+", (ROOT / "deploy/prometheus/alerts.yaml").read_text()))
        for name in sorted(alert_metrics):
            if name not in ALERT_LABELS:
                bad(f"alerts.yaml uses {name}, which is not a core metric of shared/interface.md")
                continue
            if name not in exposed:
                continue  # no sample yet in this run (e.g. no revocation check); listed below
            for labels in exposed[name]:
                missing = ALERT_LABELS[name] - labels
                if missing:
                    bad(f"{name} is exposed without label(s) {sorted(missing)} that the alert rules use")
                    break
        cfg_text = open(config, encoding="utf-8").read()
        required = {"mtlsd_certificate_expiry_timestamp_seconds", "mtlsd_config_reloads_total",
                    "mtlsd_connections_total", "mtlsd_config_last_reload_successful",
                    "mtlsd_upstream_connect_failures_total"}
        if "crl_files: [/" in cfg_text or re.search(r"crl_files:\s*\n\s*-", cfg_text):
            required.add("mtlsd_crl_next_update_timestamp_seconds")
        for name in sorted(required - exposed.keys()):
            bad(f"{name} (used by the alert rules) has no sample after start-up, a reload and a connection")
        if not re.search(r'^mtlsd_config_reloads_total\{[^}]*result="success"[^}]*\}\s+[1-9]', metrics, re.M):
            bad('mtlsd_config_reloads_total{result="success"} did not count the SIGHUP reload')
        unseen = sorted(alert_metrics & ALERT_LABELS.keys() - exposed.keys())
        run.notes.clear()
        run.proc.send_signal(signal.SIGTERM)
        stopping = run.wait_notify("STOPPING=1", 10)
        try:
            rc = run.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bad("did not exit within 15s of SIGTERM (no connections open)")
            return
        if not stopping:
            bad(f"SIGTERM: no STOPPING=1 (got {run.notes})")
        if rc != 0:
            bad(f"SIGTERM: exit status {rc}, expected 0")
        if not any(p.startswith(f"{source}:") for p in problems):
            extra = f"; no sample yet (needs client traffic): {', '.join(unseen)}" if unseen else ""
            print(f"ok: {source}: READY=1 after bind, health/readyz/healthz 200, SIGHUP -> RELOADING/READY, "
                  f"metrics lint-clean with the alerts' labels, SIGTERM -> STOPPING, exit 0{extra}")
    finally:
        run.stop()


def check_start_with_upstream_check(binary, config, source, paths, workdir, problems):
    """`config` (of a manifest whose mtlsd probes ask `paths`) with an upstream_check on every
    listener, and every upstream refusing connections."""
    def bad(msg):
        problems.append(f"{source} + upstream_check: {msg}")
        print(f"FAIL: {source} + upstream_check: {msg}")

    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    cfg = yaml.safe_load(open(config, encoding="utf-8"))
    for listener in cfg["listeners"]:
        listener["upstream"] = f"127.0.0.1:{refusing.getsockname()[1]}"
        listener["upstream_check"] = {"interval": "500ms", "timeout": "500ms"}
    checked = os.path.join(workdir, "upstream-check.yaml")
    with open(checked, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    run = Run(binary, checked, workdir)
    try:
        admin, why = run.start_ready()
        if why:
            bad(why)
            return
        # The checks' first results: /readyz turns 503 once every upstream check failed.
        deadline = time.monotonic() + 10
        while (got := http_get(f"http://{admin}/readyz"))[0] != 503:
            if time.monotonic() > deadline:
                bad(f"/readyz never said the upstream checks fail: {got}")
                return
            time.sleep(0.05)
        answers = {}
        for probe, want in (("startupProbe", 200), ("readinessProbe", 503)):
            status, body = answers[probe] = http_get(f"http://{admin}{paths[probe]}")
            if status != want:
                bad(f"the {probe} (GET {paths[probe]}) answered {status}, not {want}: {body.strip()[:200]}"
                    + (" (it waits for the upstream: the kubelet restarts mtlsd every 30 s, and"
                       " never starts a native sidecar's app)" if probe == "startupProbe" else ""))
        if not any(p.startswith(f"{source} + upstream_check:") for p in problems):
            print(f"ok: {source} with an upstream_check failing: startupProbe {paths['startupProbe']} "
                  f"{answers['startupProbe'][0]}, readinessProbe {paths['readinessProbe']} "
                  f"{answers['readinessProbe'][0]}")
    finally:
        run.stop()
        refusing.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtlsd", required=True)
    ap.add_argument("--pki", help="existing scripts/gen-pki.sh output (default: generate one)")
    args = ap.parse_args()
    binary = os.path.abspath(args.mtlsd)
    if not os.access(binary, os.X_OK):
        print(f"FAIL: {args.mtlsd}: no mtlsd binary", file=sys.stderr)
        return 2
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = args.pki or os.path.join(tmp, "pki")
        if not args.pki:
            subprocess.run(["bash", str(ROOT / "scripts/gen-pki.sh"), pki], check=True, stdout=subprocess.DEVNULL)
        out = os.path.join(tmp, "configs")
        ex = subprocess.run([sys.executable, str(HERE / "extract_configs.py"), "--pki", pki, "--out", out, "--loopback"],
                            stdout=subprocess.PIPE, text=True)
        if ex.returncode != 0:
            print(ex.stdout)
            print("FAIL: extract_configs.py failed")
            return 1
        ran = 0
        for line in ex.stdout.splitlines():
            config, source = line.split("\t", 1)
            chk = subprocess.run([binary, "check", "--config", config], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            if chk.returncode != 0:
                print(f"skip: {source}: `mtlsd check` rejects it (check_configs.sh reports why)")
                continue
            ran += 1
            check_one(binary, config, source, tmp, problems)
        if ran == 0:
            print("FAIL: no config could be started")
            return 1
        index = [line.split("\t", 1) for line in ex.stdout.splitlines()]
        for manifest, ns, configmaps, paths in mtlsd_probes():
            found = [(c, s) for c, s in index if any(f"ConfigMap {ns}/{cm}," in s for cm in configmaps)]
            if len(found) != 1 or not {"startupProbe", "readinessProbe"} <= paths.keys():
                problems.append(f"{manifest}: no single mtlsd config ({found}) or no httpGet probes ({paths})")
                print(f"FAIL: {problems[-1]}")
                continue
            check_start_with_upstream_check(binary, found[0][0], found[0][1], paths, tmp, problems)
    print(f"live: {ran} config(s) run, {len(mtlsd_probes())} started with a failing upstream_check: "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
