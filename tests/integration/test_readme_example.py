"""README.md's worked example, run as written: its shell block, with only the binary's path and
the two ports changed (and a wait for each server to listen before it is used). An operator who
copies it must get what the README says: the admitted client's page, the refusal, `accepted:`.
(Review: the CA it made had no keyUsage, which strict path validation refuses: the admitted
client was refused as bad_key_usage.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mtlsd_harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def worked_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## A worked example\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## A worked example' section"
    block = re.search(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the worked example has no sh block"
    return block.group(1)


def runnable(script: str, mtlsd: str, tls_port: int, up_port: int) -> str:
    """The block with this machine's binary and ports; after each line that starts a server in
    the background, a wait (5 s at most) until its port accepts."""
    script = script.replace("build/release/mtlsd", mtlsd)
    script = script.replace("8443", str(tls_port)).replace("8080", str(up_port))
    lines = []
    for line in script.splitlines():
        lines.append(line)
        port = tls_port if " run " in line else up_port if "http.server" in line else None
        if port and line.split("#")[0].rstrip().endswith("&"):
            lines.append(f"for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null"
                         " && break; sleep 0.05; done")
    return "\n".join(["trap 'kill $(jobs -p) 2>/dev/null' EXIT"] + lines) + "\n"


def test_the_readme_worked_example_works_as_written(mtlsd_bin, tmp_path):
    script = runnable(worked_example(), mtlsd_bin, free_port(), free_port())
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    out, err = done.stdout, done.stderr
    assert "is valid" in out, (out, err)                             # mtlsd check
    assert "hello from the upstream" in out, (out, err)              # the admitted client
    assert "certificate required" in err, (out, err)                 # the client without one
    assert "accepted: spiffe://example.org/ns/prod/sa/billing" in out, (out, err)  # verify
