#!/usr/bin/python3
"""Run the daemon from the image's file system, as a container runtime would.

  image_live.py ROOTFS CONFIG     (as root; CONFIG is a path inside ROOTFS)

ROOTFS is what docker/rootfs.sh wrote (the whole runtime stage of the image).
In a private mount namespace, /proc and /dev are mounted into it (a runtime
provides both), and `mtlsd run` starts there under chroot as UID/GID 65532,
the image's USER, with its sandbox (seccomp, Landlock) on. Then:

  * the admin listener comes up and GET /readyz from outside answers 200;
  * the image's HEALTHCHECK command, run inside ROOTFS, exits 0;
  * SIGTERM ends the daemon with exit status 0.

CONFIG must bind loopback port 0 only; the addresses are read from the log.
Exit 1 with FAIL lines on any problem.
"""
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

USER = "65532:65532"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rootfs, config = sys.argv[1], sys.argv[2]
    script = ('mkdir -p "$1/proc" "$1/dev" && mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" '
              f'&& exec chroot --userspec={USER} "$1" /usr/bin/mtlsd run --config "$2"')
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                             rootfs, config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    admin_seen = threading.Event()
    ready_seen = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if re.search(r'admin listening', line):
                admin_seen.set()
            # "ready" comes after "sandbox on" (the sandbox is on before the daemon says it is
            # ready): once it is read, the sandbox line is in `lines` if there was one.
            if re.search(r'\bready version=|"msg":\s*"ready"', line):
                ready_seen.set()

    threading.Thread(target=read, daemon=True).start()
    problems = []
    try:
        if not admin_seen.wait(15):
            problems.append("no 'admin listening' line within 15 s")
            return report(problems, lines)
        addr = None
        for line in lines:
            if "admin listening" in line:
                m = re.search(r'address["=:]+"?([0-9.]+:\d+)', line)
                addr = m.group(1) if m else None
        if not addr:
            problems.append("the admin address is not in the log")
            return report(problems, lines)
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError as e:
            status = f"error {e}"
        if not ready_seen.wait(15):
            problems.append("no 'ready' line within 15 s")
        elif not any(re.search(r"\bsandbox on\b", line) for line in lines):
            problems.append("no 'sandbox on' line: the daemon did not confine itself")
        if status == 200:
            print(f"ok: mtlsd runs from the image file system as {USER} (sandbox on): /readyz 200 at {addr}")
        else:
            problems.append(f"GET http://{addr}/readyz: {status}")
        hc = subprocess.run(["chroot", f"--userspec={USER}", rootfs, "/usr/bin/mtlsd", "health", "--url",
                             f"http://{addr}/readyz"], capture_output=True, text=True, timeout=15)
        if hc.returncode == 0:
            print("ok: the HEALTHCHECK command in the image file system exits 0 against the running daemon")
        else:
            problems.append(f"HEALTHCHECK command exited {hc.returncode}: {hc.stdout}{hc.stderr}".strip())
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(45)
        except subprocess.TimeoutExpired:
            rc = "still running 45 s after SIGTERM"
        if rc == 0:
            print("ok: SIGTERM ends the daemon in the image file system with exit status 0")
        else:
            problems.append(f"after SIGTERM: exit {rc}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return report(problems, lines)


def report(problems, lines):
    if problems:
        print("\n".join(lines[-30:]))
        for p in problems:
            print(f"FAIL: image file system: {p}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
