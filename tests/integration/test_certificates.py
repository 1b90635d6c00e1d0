"""tls.certificates: several certificates on one server-mode listener, chosen per handshake by
SNI (exact, then *.suffix, then the default entries) and by the client's signature algorithms
(RSA and ECDSA for the same names). Real clients: openssl s_client, Python ssl, curl."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from mtlsd_harness import daemon_config, run_cli, server_listener, write_config

# Certificates this module makes (name -> (key type, CN, SANs)), all signed by the test CA.
CERTS = {
    "rsa-default": ("rsa", ["localhost"]),
    "ec-default": ("ec", ["localhost"]),
    "api-ec": ("ec", ["api.example.org"]),
    "api-rsa": ("rsa", ["api.example.org"]),
    "apps-wildcard": ("ec", ["*.apps.example.org"]),
}


def make_cert(pki, out: Path, name: str, kind: str, sans: list[str]) -> None:
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    usage = "digitalSignature,keyEncipherment" if kind == "rsa" else "digitalSignature"
    ext = out / f"{name}.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   f"keyUsage=critical,{usage}\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                   "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) + "\n")
    key, csr, crt = (out / f"{name}.{x}" for x in ("key", "csr", "crt"))
    subprocess.run(["openssl", "req", "-new", *newkey, "-nodes", "-keyout", str(key),
                    "-subj", f"/CN={name}", "-out", str(csr)], check=True, capture_output=True)
    key.chmod(0o600)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", pki.path("ca.crt"),
                    "-CAkey", pki.path("ca.key"), "-set_serial",
                    str(abs(hash(name)) % 10**12 + 1000), "-days", "30", "-extfile", str(ext),
                    "-out", str(crt)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(pki, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multi-certs")
    for name, (kind, sans) in CERTS.items():
        make_cert(pki, out, name, kind, sans)
    return out


def entries(certs: Path) -> list[dict]:
    return [
        {"cert": str(certs / "rsa-default.crt"), "key": str(certs / "rsa-default.key")},
        {"cert": str(certs / "ec-default.crt"), "key": str(certs / "ec-default.key"),
         "server_names": []},
        {"cert": str(certs / "api-ec.crt"), "key": str(certs / "api-ec.key"),
         "server_names": ["API.example.org"]},
        {"cert": str(certs / "apps-wildcard.crt"), "key": str(certs / "apps-wildcard.key"),
         "server_names": ["*.apps.example.org"]},
        {"cert": str(certs / "api-rsa.crt"), "key": str(certs / "api-rsa.key"),
         "server_names": ["api.example.org"]},
    ]


def multi_tls(certs: Path, **extra) -> dict:
    return {"cert": None, "key": None, "certificates": entries(certs), **extra}


def served_by_s_client(daemon, pki, sni: str, sigalgs: str, version: str):
    """The subject CN and key type of the certificate mtlsd served to s_client."""
    host, port = daemon.addr()
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", sni,
         f"-tls{version.replace('.', '_')}", "-sigalgs", sigalgs,
         "-client_sigalgs", "ECDSA+SHA256", "-cert", pki.path("client.crt"),
         "-key", pki.path("client.key"), "-CAfile", pki.path("ca.crt")],
        input=b"ping\n", capture_output=True, timeout=20)
    out = proc.stdout.decode(errors="replace")
    subject = re.search(r"^subject=\s*CN\s*=\s*(\S+)", out, re.M)
    key = re.search(r"^Server public key is (\d+) bit", out, re.M)
    assert subject and key, out + proc.stderr.decode(errors="replace")
    return subject.group(1), ("rsa" if key.group(1) == "2048" else "ec")


RSA_ONLY = "RSA-PSS+SHA256:rsa_pkcs1_sha256"
ECDSA_ONLY = "ECDSA+SHA256"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("sni,sigalgs,expected", [
    ("localhost", RSA_ONLY, ("rsa-default", "rsa")),
    ("localhost", ECDSA_ONLY, ("ec-default", "ec")),
    ("api.example.org", RSA_ONLY, ("api-rsa", "rsa")),
    ("api.example.org", ECDSA_ONLY, ("api-ec", "ec")),
    ("x.apps.example.org", ECDSA_ONLY, ("apps-wildcard", "ec")),
    # The wildcard entry has no RSA certificate; an RSA-only client cannot be served by it.
])
def test_certificate_by_sni_and_sigalgs(serve, pki, certs, version, sni, sigalgs, expected):
    daemon, _ = serve(tls=multi_tls(certs))
    assert served_by_s_client(daemon, pki, sni, sigalgs, version) == expected


def python_served(daemon, pki, sni: str) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    ctx.check_hostname = False  # the unknown-name case is served the default (localhost)
    with socket.create_connection(daemon.addr(), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            s.sendall(b"ping\n")
            assert s.recv(16) == b"ping\n"
            return subject["commonName"]


def test_sni_names_with_python_ssl(serve, pki, certs):
    daemon, _ = serve(tls=multi_tls(certs))
    # Python offers ECDSA and RSA: the ECDSA certificate wins where there are both.
    assert python_served(daemon, pki, "api.example.org") == "api-ec"
    assert python_served(daemon, pki, "API.Example.Org") == "api-ec"
    assert python_served(daemon, pki, "one.apps.example.org") == "apps-wildcard"
    # *.suffix covers one label only; unknown names get the default entries.
    assert python_served(daemon, pki, "a.b.apps.example.org") == "ec-default"
    assert python_served(daemon, pki, "unknown.example.net") == "ec-default"


def test_curl_resolve_gets_the_named_certificate(serve, pki, certs):
    daemon, _ = serve(tls=multi_tls(certs))
    host, port = daemon.addr()
    proc = subprocess.run(
        ["curl", "-v", "-sS", "--max-time", "10", "--cacert", pki.path("ca.crt"),
         "--cert", pki.path("client.crt"), "--key", pki.path("client.key"),
         "--resolve", f"api.example.org:{port}:{host}", f"https://api.example.org:{port}/"],
        capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace")
    # The echo upstream does not speak HTTP; the handshake (and hostname check) is what counts.
    assert "subject: CN=api-ec" in err, err
    assert "SSL certificate verify ok" in err, err


def test_strict_sni_refuses_unknown_names(serve, pki, certs):
    daemon, up = serve(tls=multi_tls(certs, strict_sni=True))
    host, port = daemon.addr()
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "nope.example.net",
         "-cert", pki.path("client.crt"), "-key", pki.path("client.key")],
        input=b"ping\n", capture_output=True, timeout=20)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "unrecognized name" in out or "alert number 112" in out, out
    line = daemon.wait_for_access(reason="protocol_error")
    assert "nope.example.net" in line.get("detail", ""), line
    assert "strict_sni" in line.get("detail", ""), line
    up.assert_untouched()
    # Named and wildcard names are still served.
    assert python_served(daemon, pki, "api.example.org") == "api-ec"
    assert python_served(daemon, pki, "z.apps.example.org") == "apps-wildcard"


def test_expiry_series_for_every_certificate(serve, certs):
    daemon, _ = serve(tls=multi_tls(certs))
    series = daemon.scrape().series("mtlsd_certificate_expiry_timestamp_seconds", role="server")
    assert sorted(labels["subject"] for labels, _ in series) == sorted(
        f"CN={name}" for name in CERTS)


def test_check_names_the_entry_whose_key_does_not_match(mtlsd_bin, pki, certs, tmp_path):
    bad = entries(certs)
    bad[3]["key"] = str(certs / "api-ec.key")  # apps-wildcard.crt with api-ec's key
    cfg = write_config(tmp_path / "bad.yaml", daemon_config(
        [server_listener(pki, "127.0.0.1:9", tls={"cert": None, "key": None,
                                                   "certificates": bad})]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    text = cfg.read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "api-ec.key" in t and i > 1
                and "apps-wildcard.crt" in text[i - 2])
    assert re.search(rf"{re.escape(str(cfg))}:{line}:\d+: .*does not match", out), out


def serial_of(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def test_reload_swaps_one_entry(serve, pki, certs, tmp_path):
    # The api entry's files live in their own directory; replacing them reloads the listener
    # and the new certificate is served for that name, the others unchanged.
    live = tmp_path / "live"
    live.mkdir()
    make_cert(pki, tmp_path, "api-ec-2", "ec", ["api.example.org"])
    for suffix in ("crt", "key"):
        (live / f"api.{suffix}").write_bytes((certs / f"api-ec.{suffix}").read_bytes())
        (live / f"api.{suffix}").chmod(0o600)
    tls = multi_tls(certs)
    tls["certificates"][2] = {"cert": str(live / "api.crt"), "key": str(live / "api.key"),
                              "server_names": ["api.example.org"]}
    daemon, _ = serve(tls=tls)
    assert python_served(daemon, pki, "api.example.org") == "api-ec"
    mark = daemon.log_mark()
    # Key and certificate land together (one debounced reload), each renamed into place.
    for suffix in ("key", "crt"):
        tmp = live / f".api.{suffix}.tmp"
        tmp.write_bytes((tmp_path / f"api-ec-2.{suffix}").read_bytes())
        tmp.chmod(0o600)
        tmp.replace(live / f"api.{suffix}")
    line = daemon.wait_for_log(lambda l: l.get("msg") == "reloaded", since=mark)
    # The third entry's rotation is named (review: only the first entry was compared).
    listener, _, serials = line["certificates_rotated"].partition(":")
    assert listener == "inbound", line
    assert [int(x, 16) for x in serials.split("->")] == [
        serial_of(certs / "api-ec.crt"), serial_of(tmp_path / "api-ec-2.crt")], line
    assert python_served(daemon, pki, "api.example.org") == "api-ec-2"
    assert python_served(daemon, pki, "x.apps.example.org") == "apps-wildcard"
    subjects = [labels["subject"] for labels, _ in daemon.scrape().series(
        "mtlsd_certificate_expiry_timestamp_seconds", role="server")]
    assert "CN=api-ec-2" in subjects and "CN=api-ec" not in subjects, subjects


def test_check_refuses_two_certificates_of_one_key_type_for_a_name(mtlsd_bin, pki, certs,
                                                                    tmp_path):
    dup = entries(certs)
    dup[4]["cert"], dup[4]["key"] = dup[2]["cert"], dup[2]["key"]  # a second ECDSA for api.*
    cfg = write_config(tmp_path / "dup.yaml", daemon_config(
        [server_listener(pki, "127.0.0.1:9", tls={"cert": None, "key": None,
                                                   "certificates": dup})]))
    proc = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert re.search(rf"{re.escape(str(cfg))}:\d+:\d+: tls.certificates\[4\]: entry 2 already "
                     r"serves 'api.example.org' with the same key type \(ECDSA\)", out), out
