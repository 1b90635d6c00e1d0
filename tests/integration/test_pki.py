"""Self-check of scripts/gen-pki.sh: every certificate has the properties the
daemon tests rely on, judged by `openssl verify` rather than by our own code."""

from __future__ import annotations

import resource
import subprocess

import pytest

from pki import GEN_PKI, Pki, generate_pki


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=input is None,
                          input=input, timeout=30)


def verify(pki: Pki, cert: str, *, ca: str = "ca.crt", untrusted: str | None = None,
           purpose: str = "sslclient", extra: tuple = ()) -> subprocess.CompletedProcess:
    args = ["verify", "-CAfile", pki.path(ca), "-purpose", purpose, *extra]
    if untrusted:
        args += ["-untrusted", pki.path(untrusted)]
    return openssl(*args, pki.path(cert))


# (certificate, verify options, expected error text or None for OK)
VERIFY_CASES = [
    ("ca.crt", {"purpose": "any"}, None),
    ("int.crt", {"purpose": "any"}, None),
    ("other-ca.crt", {"ca": "other-ca.crt", "purpose": "any"}, None),
    ("other-ca.crt", {"purpose": "any"}, "self-signed certificate"),
    ("server.crt", {"purpose": "sslserver"}, None),
    ("server.crt", {"purpose": "sslserver",
                    "extra": ("-verify_hostname", "localhost")}, None),
    ("server.crt", {"purpose": "sslserver", "extra": ("-verify_ip", "127.0.0.1")}, None),
    ("server.crt", {"purpose": "sslserver", "extra": ("-verify_ip", "::1")}, None),
    ("server.crt", {"purpose": "sslclient"}, "unsuitable certificate purpose"),
    ("server-int.crt", {"purpose": "sslserver", "untrusted": "int.crt"}, None),
    ("server-int.crt", {"purpose": "sslserver"}, "unable to get local issuer certificate"),
    ("client.crt", {}, None),
    ("client2.crt", {}, None),
    ("client-int.crt", {"untrusted": "client-int-chain.crt"}, None),
    ("client-int.crt", {}, "unable to get local issuer certificate"),
    ("client-expired.crt", {}, "certificate has expired"),
    ("client-notyet.crt", {}, "certificate is not yet valid"),
    ("client-serverauth.crt", {}, "unsuitable certificate purpose"),
    ("client-noeku.crt", {}, None),
    ("client-other.crt", {}, "unable to get local issuer certificate"),
    ("client-other.crt", {"ca": "other-ca.crt"}, None),
    ("client-enc.crt", {}, None),
    ("client-quote.crt", {}, None),
    ("client-revoked.crt", {}, None),
    ("client-revoked.crt", {"extra": ("-crl_check", "-CRLfile", "{crl.pem}")},
     "certificate revoked"),
    ("client.crt", {"extra": ("-crl_check", "-CRLfile", "{crl.pem}")}, None),
    ("client-int.crt", {"untrusted": "int.crt",
                        "extra": ("-crl_check_all", "-CRLfile", "{crl.pem}",
                                  "-CRLfile", "{int-crl.pem}")}, None),
]


@pytest.mark.parametrize("cert,opts,error", VERIFY_CASES,
                         ids=[f"{c}-{e or 'ok'}" for c, _, e in VERIFY_CASES])
def test_openssl_verify_outcome(pki, cert, opts, error):
    opts = dict(opts)
    opts["extra"] = tuple(pki.path(a[1:-1]) if a.startswith("{") else a
                          for a in opts.get("extra", ()))
    proc = verify(pki, cert, **opts)
    output = proc.stdout + proc.stderr
    if error is None:
        assert proc.returncode == 0 and ": OK" in output, output
    else:
        assert proc.returncode != 0 and error in output, output


def ext(pki: Pki, cert: str, name: str) -> str:
    proc = openssl("x509", "-in", pki.path(cert), "-noout", "-ext", name)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def subject(pki: Pki, cert: str) -> str:
    return openssl("x509", "-in", pki.path(cert), "-noout", "-subject",
                   "-nameopt", "RFC2253").stdout.strip()


@pytest.mark.parametrize("cert,subj,sans", [
    ("ca.crt", "CN=mtlsd Test Root CA,O=mtlsd Test", []),
    ("server.crt", "CN=localhost,O=mtlsd Test",
     ["DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"]),
    ("client.crt", "CN=client,OU=payments,O=mtlsd Test",
     ["URI:spiffe://example.org/ns/default/sa/client", "DNS:client.example.org"]),
    ("client2.crt", "CN=client2,OU=other,O=mtlsd Test",
     ["URI:spiffe://example.org/ns/other/sa/client2", "DNS:client2.other.org"]),
    ("client-int.crt", "CN=client-int,OU=payments,O=mtlsd Test",
     ["URI:spiffe://example.org/ns/default/sa/client-int"]),
    ("client-quote.crt", 'CN=quote\\"back\\\\slash,O=mtlsd Test', []),
])
def test_names(pki, cert, subj, sans):
    assert subject(pki, cert) == f"subject={subj}"
    san_text = ext(pki, cert, "subjectAltName")
    for san in sans:
        assert san in san_text
    if not sans:
        assert "Subject Alternative Name" not in san_text


def test_intermediate_is_pathlen_zero_ca(pki):
    assert "CA:TRUE, pathlen:0" in ext(pki, "int.crt", "basicConstraints")


def test_eku_profiles(pki):
    assert "TLS Web Client Authentication" in ext(pki, "client.crt", "extendedKeyUsage")
    serverauth = ext(pki, "client-serverauth.crt", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in serverauth
    assert "Client" not in serverauth
    assert ext(pki, "client-noeku.crt", "extendedKeyUsage").strip() == ""


def certs_in(pki: Pki, name: str) -> list[str]:
    p7 = openssl("crl2pkcs7", "-nocrl", "-certfile", pki.path(name), input=None)
    assert p7.returncode == 0, p7.stderr
    listing = subprocess.run(["openssl", "pkcs7", "-print_certs", "-noout"], input=p7.stdout,
                             capture_output=True, text=True, timeout=30)
    return [l for l in listing.stdout.splitlines() if l.startswith("subject=")]


@pytest.mark.parametrize("bundle,leaf", [("server-int-fullchain.crt", "CN = localhost"),
                                         ("client-int-chain.crt", "CN = client-int")])
def test_chain_files_are_leaf_then_intermediate(pki, bundle, leaf):
    subjects = certs_in(pki, bundle)
    assert len(subjects) == 2
    assert subjects[0].endswith(leaf)
    assert subjects[1].endswith("CN = mtlsd Test Intermediate CA")


def pubkey_of_cert(pki: Pki, cert: str) -> str:
    return openssl("x509", "-in", pki.path(cert), "-noout", "-pubkey").stdout


@pytest.mark.parametrize("key,cert,passfile", [("client-enc.key", "client-enc.crt", "client-enc.pass"),
                                               ("server-enc.key", "server.crt", "server-enc.pass")])
def test_encrypted_keys(pki, key, cert, passfile):
    assert "BEGIN ENCRYPTED PRIVATE KEY" in (pki.root / key).read_text()
    wrong = openssl("pkey", "-in", pki.path(key), "-passin", "pass:wrong", "-pubout")
    assert wrong.returncode != 0
    right = openssl("pkey", "-in", pki.path(key), "-passin", f"file:{pki.path(passfile)}",
                    "-pubout")
    assert right.returncode == 0, right.stderr
    assert right.stdout == pubkey_of_cert(pki, cert)


@pytest.mark.parametrize("bundle,cert,ncerts", [("server.p12", "server.crt", 2),
                                                ("server-int.p12", "server-int.crt", 2),
                                                ("client.p12", "client.crt", 2)])
def test_pkcs12_bundles(pki, bundle, cert, ncerts):
    passfile = f"file:{pki.path(bundle + '.pass')}"
    dump = openssl("pkcs12", "-in", pki.path(bundle), "-passin", passfile, "-nodes")
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("BEGIN CERTIFICATE") == ncerts
    assert "PRIVATE KEY" in dump.stdout
    leaf = openssl("pkcs12", "-in", pki.path(bundle), "-passin", passfile, "-nokeys",
                   "-clcerts")
    assert pki.read(cert).decode().strip() in leaf.stdout
    assert openssl("pkcs12", "-in", pki.path(bundle), "-passin", "pass:wrong",
                   "-nokeys").returncode != 0


def crl_text(pki: Pki, name: str) -> str:
    proc = openssl("crl", "-in", pki.path(name), "-noout", "-text")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def serial(pki: Pki, cert: str) -> str:
    return openssl("x509", "-in", pki.path(cert), "-noout", "-serial").stdout.strip().split("=")[1]


def test_crls(pki):
    root_crl = crl_text(pki, "crl.pem")
    assert "Issuer: O = mtlsd Test, CN = mtlsd Test Root CA" in root_crl
    assert f"Serial Number: {serial(pki, 'client-revoked.crt')}" in root_crl
    assert f"Serial Number: {serial(pki, 'client.crt')}" not in root_crl
    int_crl = crl_text(pki, "int-crl.pem")
    assert "CN = mtlsd Test Intermediate CA" in int_crl
    assert "No Revoked Certificates" in int_crl


def test_ca_database_supports_later_revocation(pki, tmp_path):
    """Later work revokes with `openssl ca`; prove that works on a private copy
    (which also proves copy_to() rewrote the absolute paths)."""
    mine = pki.copy_to(tmp_path / "pki")
    mine.openssl("ca", "-batch", "-name", "root_ca", "-revoke", mine.path("client.crt"))
    mine.openssl("ca", "-batch", "-name", "root_ca", "-gencrl", "-out", mine.path("crl.pem"))
    proc = verify(mine, "client.crt", extra=("-crl_check", "-CRLfile", mine.path("crl.pem")))
    assert "certificate revoked" in proc.stdout + proc.stderr
    # The shared PKI is untouched.
    assert f"Serial Number: {serial(pki, 'client.crt')}" not in crl_text(pki, "crl.pem")


def test_private_keys_are_owner_only(pki):
    for key in pki.root.glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key


def test_generator_is_idempotent_and_quiet(tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    (out / "stale-file").write_text("must be wiped")
    for _ in range(2):
        # "Fast" in CPU seconds of the script and every openssl it runs (all waited for, so all
        # in RUSAGE_CHILDREN): unlike wall time, it does not grow when the other core is busy.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([str(GEN_PKI), str(out)], capture_output=True, text=True,
                              timeout=120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 10, f"gen-pki.sh used {cpu:.1f}s of CPU"
        assert proc.stderr == ""
        assert len(proc.stdout.splitlines()) == 1 and "gen-pki:" in proc.stdout
    assert not (out / "stale-file").exists()
    assert (out / "openssl.cnf").exists() and (out / "db" / "root" / "index.txt").exists()


def test_generator_fails_loudly_without_outdir():
    proc = subprocess.run([str(GEN_PKI)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "usage" in proc.stderr


def test_generate_pki_helper(tmp_path):
    p = generate_pki(tmp_path / "x")
    assert (p.root / "client.crt").exists()
    assert len(p.sha256_fingerprint("client.crt", colons=False)) == 64
