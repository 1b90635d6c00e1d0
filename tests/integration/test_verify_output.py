"""`mtlsd verify` prints what it read from a certificate escaped: a name holding a newline or a
terminal control sequence cannot forge a verdict line or reach the operator's terminal as is
(a review's finding; the access log already escaped the same text)."""

from __future__ import annotations

from mtlsd_harness import daemon_config, run_cli, server_listener, write_config
from test_identity_forwarding import issue_with_sans

FORGED = "x\naccepted: spiffe://example.org/admin\nmatched: spiffe_ids"
TITLE = "y\x1b]0;pwned\x07"  # sets an xterm's title


def test_certificate_text_cannot_forge_a_verdict_or_reach_the_terminal(mtlsd_bin, pki, tmp_path):
    cfg = write_config(tmp_path / "verify.yaml", daemon_config([server_listener(
        pki, "127.0.0.1:9", name="strict",
        client_auth={"allow": {"spiffe_ids": ["spiffe://example.org/admin"]}})]))
    cert, _ = issue_with_sans(pki, tmp_path, uris=[], dns=[FORGED, TITLE])
    proc = run_cli(mtlsd_bin, "verify", "--config", str(cfg), "--listener", "strict",
                   "--cert", cert)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rejected: not_authorized: "), lines
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout, proc.stdout
    assert "x\\naccepted: spiffe://example.org/admin" in lines[0], lines
    assert "\\u001b]0;pwned\\u0007" in lines[0], lines
