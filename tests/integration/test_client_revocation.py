"""Client mode: revocation of the remote server's chain, as server mode does it for clients —
CRL files, OCSP (AIA), on_unavailable, metrics, require_staple, and live connections closed
when the remote's certificate is revoked (recheck_established)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from clients import fmt_addr
from mtlsd_harness import daemon_config, run_cli
from revocation_env import *  # noqa: F401,F403  (fixtures)
from revocation_env import ROOT_CRL, metric
from test_revocation_stapling import stapling_listener
from tls_remote import Remote, plain_exchange

TIMEOUT = 10.0


def assert_closed_as_revoked(client, sock, local: str) -> None:
    """The app's connection `sock` (from `local`) through a client-mode listener ends (EOF or a
    reset; within the socket's timeout), and its access line says its remote was revoked while
    connected."""
    try:
        assert sock.recv(100) == b""
    except ConnectionResetError:
        pass
    line = client.wait_for_access(client=local)
    assert line["reason"] == "revoked" and "revoked while connected" in line["detail"], line
    sock.close()


def outbound(pki, remote: str, name: str = "outbound", **revocation) -> dict:
    return {"name": name, "mode": "client", "listen": "127.0.0.1:0", "upstream": remote,
            "tls": {"cert": pki.path("client.crt"), "key": pki.path("client.key")},
            "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
            "revocation": revocation}


def revoke(pki, cert: str) -> None:
    pki.openssl("ca", "-batch", "-name", "root_ca", "-revoke", pki.path(cert))


def gencrl(pki) -> str:
    pki.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", pki.path("crl.pem"))
    return pki.path("crl.pem")


def refused(client, listener: str, reason: str) -> dict:
    data, local = plain_exchange(client.addr(listener))
    line = client.wait_for_access(client=local)
    assert data == b"", line
    assert line["listener"] == listener and line["result"] == "rejected", line
    assert line["reason"] == reason, line
    return line


def admitted(client, listener: str) -> dict:
    data, local = plain_exchange(client.addr(listener))
    line = client.wait_for_access(client=local)
    assert data == b"ping\n" and line["result"] == "accepted", line
    return line


def test_crl_file_refuses_a_revoked_remote(start_mtlsd, mtlsd_bin, rpki, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    revoke(mine, "server.crt")
    crl = gencrl(mine)
    revoked = Remote(mine.path("server.crt"), mine.path("server.key"))
    good = Remote(mine.path("server-ocsp.crt"), mine.path("server-ocsp.key"))
    try:
        client = start_mtlsd(daemon_config([
            outbound(mine, revoked.address, "revoked", crl_files=[crl], crl_scope="leaf"),
            outbound(mine, good.address, "good", crl_files=[crl], crl_scope="leaf"),
        ]))
        line = refused(client, "revoked", "revoked")
        assert "crl file" in line["detail"], line
        admitted(client, "good")
        assert metric(client, "mtlsd_revocation_checks_total", listener="revoked", method="crl",
                      result="revoked") == 1
        assert metric(client, "mtlsd_revocation_checks_total", listener="good", method="crl",
                      result="good") == 1
        proc = run_cli(mtlsd_bin, "verify", "--config", str(client.config_path), "--listener",
                       "revoked", "--cert", mine.path("server.crt"))
        assert proc.returncode == 1 and proc.stdout.startswith("rejected: revoked: "), \
            proc.stdout
        assert "(crl file)" in proc.stdout, proc.stdout
    finally:
        revoked.close()
        good.close()


def test_ocsp_from_the_remotes_aia(start_mtlsd, rpki, rv, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    remote = Remote(mine.path("server-ocsp.crt"), mine.path("server-ocsp.key"))
    try:
        client = start_mtlsd(daemon_config([outbound(mine, remote.address, ocsp="leaf")]))
        admitted(client, "outbound")
        assert metric(client, "mtlsd_revocation_checks_total", listener="outbound",
                      method="ocsp", result="good") == 1
        # Revoked now; a second remote with the same certificate is asked about afresh (the
        # first answer is cached until its nextUpdate, as in server mode).
        revoke(mine, "server-ocsp.crt")
        rv.ocsp.index = mine.path("db/root/index.txt")
        client2 = start_mtlsd(daemon_config([outbound(mine, remote.address, ocsp="leaf")]))
        line = refused(client2, "outbound", "revoked")
        assert "ocsp" in line["detail"].lower(), line
        assert metric(client2, "mtlsd_revocation_checks_total", listener="outbound",
                      method="ocsp", result="revoked") == 1
    finally:
        remote.close()


def test_ocsp_unavailable_follows_on_unavailable(start_mtlsd, rpki, rv):
    rv.fail_status = 503
    remote = Remote(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"))
    try:
        client = start_mtlsd(daemon_config([
            outbound(rpki, remote.address, "strict", ocsp="leaf", ocsp_timeout="1s"),
            outbound(rpki, remote.address, "lenient", ocsp="leaf", ocsp_timeout="1s",
                     on_unavailable="allow"),
        ]))
        refused(client, "strict", "revocation_unavailable")
        admitted(client, "lenient")
        assert metric(client, "mtlsd_revocation_checks_total", listener="lenient",
                      method="ocsp", result="unavailable") == 1
    finally:
        remote.close()


def test_require_staple(start_mtlsd, make_upstream, rpki, rv):
    # A remote that staples nothing is refused...
    plain = Remote(rpki.path("server-ocsp.crt"), rpki.path("server-ocsp.key"))
    try:
        client = start_mtlsd(daemon_config([outbound(rpki, plain.address, require_staple=True)]))
        line = refused(client, "outbound", "revocation_unavailable")
        assert "require_staple" in line["detail"], line
    finally:
        plain.close()
    # ...one that staples a good response (mtlsd with revocation.stapling) is admitted, and
    # with ocsp: leaf as well the staple answers for the leaf (no request of the client's own).
    up = make_upstream()
    remote = start_mtlsd(daemon_config([stapling_listener(rpki, up.address)]))
    remote.wait_for_log(lambda l: l.get("msg") == "stapling OCSP response")
    host, port = remote.addr()
    client = start_mtlsd(daemon_config([
        outbound(rpki, f"{host}:{port}", "staple_only", require_staple=True),
        outbound(rpki, f"{host}:{port}", "staple_and_ocsp", require_staple=True, ocsp="leaf"),
    ]))
    requests = rv.ocsp_requests()
    admitted(client, "staple_only")
    admitted(client, "staple_and_ocsp")
    assert rv.ocsp_requests() == requests
    for name in ("staple_only", "staple_and_ocsp"):
        assert metric(client, "mtlsd_revocation_checks_total", listener=name, method="ocsp",
                      result="good") == 1


def test_revoked_remote_is_disconnected(start_mtlsd, rpki, tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    crl = gencrl(mine)
    remote = Remote(mine.path("server.crt"), mine.path("server.key"))
    try:
        client = start_mtlsd(daemon_config([outbound(mine, remote.address, crl_files=[crl],
                                                     crl_scope="leaf")]))
        sock = socket.create_connection(client.addr("outbound"), timeout=TIMEOUT)
        local = fmt_addr(sock.getsockname())
        sock.sendall(b"ping\n")
        assert sock.recv(100) == b"ping\n"

        revoke(mine, "server.crt")
        gencrl(mine)
        client.send_signal(signal.SIGHUP)

        assert_closed_as_revoked(client, sock, local)
        refused(client, "outbound", "revoked")  # and it cannot come back
    finally:
        remote.close()


def issue_server_cert(pki, name: str, extra_ext: str) -> None:
    """A serverAuth certificate for localhost from the root's `openssl ca` database (so that it
    can be revoked like the others), with `extra_ext` lines added."""
    ext = Path(pki.path(f"{name}.ext"))
    ext.write_text("[ e ]\nbasicConstraints = critical, CA:false\n"
                   "keyUsage = critical, digitalSignature\nsubjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\nextendedKeyUsage = serverAuth\n"
                   "subjectAltName = DNS:localhost\n" + extra_ext)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", pki.path(f"{name}.key")],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", pki.path(f"{name}.key"), "-subj",
                    f"/CN={name}", "-out", pki.path(f"{name}.csr")], check=True,
                   capture_output=True)
    pki.openssl("ca", "-batch", "-name", "root_ca", "-in", pki.path(f"{name}.csr"), "-out",
                pki.path(f"{name}.crt"), "-extfile", str(ext), "-extensions", "e", "-days", "30")


def test_distribution_point_of_the_remote_and_verify(start_mtlsd, mtlsd_bin, rpki, rv,
                                                     tmp_path):
    mine = rpki.copy_to(tmp_path / "pki")
    cdp = f"crlDistributionPoints = URI:{rv.url(ROOT_CRL)}\n"
    issue_server_cert(mine, "good-cdp", cdp)
    issue_server_cert(mine, "revoked-cdp", cdp)
    revoke(mine, "revoked-cdp.crt")
    rv.crls = {ROOT_CRL: Path(gencrl(mine)).read_bytes()}
    good = Remote(mine.path("good-cdp.crt"), mine.path("good-cdp.key"))
    bad = Remote(mine.path("revoked-cdp.crt"), mine.path("revoked-cdp.key"))
    try:
        rev = {"crl_distribution_points": True, "crl_scope": "leaf"}
        client = start_mtlsd(daemon_config([outbound(mine, good.address, "good", **rev),
                                            outbound(mine, bad.address, "bad", **rev)]))
        admitted(client, "good")
        line = refused(client, "bad", "revoked")
        assert "crl http://" in line["detail"], line
        assert metric(client, "mtlsd_revocation_checks_total", listener="bad", method="crl",
                      result="revoked") == 1
        # `mtlsd verify` on the client-mode listener says the same about the remote's cert.
        proc = run_cli(mtlsd_bin, "verify", "--config", str(client.config_path), "--listener",
                       "bad", "--cert", mine.path("revoked-cdp.crt"))
        assert proc.returncode == 1 and proc.stdout.startswith("rejected: revoked: "), \
            (proc.stdout, proc.stderr)
        proc = run_cli(mtlsd_bin, "verify", "--config", str(client.config_path), "--listener",
                       "good", "--cert", mine.path("good-cdp.crt"))
        assert proc.returncode == 0 and "revocation: good (crl http://" in proc.stdout, \
            (proc.stdout, proc.stderr)
    finally:
        good.close()
        bad.close()
