"""Certificates that strict RFC 5280 validation refuses (and a few that it accepts), made at test
time with the openssl CLI: each profile is an openssl.cnf extension section, so a test names
exactly which rule a certificate breaks."""

from __future__ import annotations

import subprocess
from pathlib import Path

GOOD_CA = """basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

USAGE_EXT = {
    "client": "extendedKeyUsage = clientAuth\n"
              "subjectAltName = DNS:localhost, URI:spiffe://example.org/strict/{name}\n",
    "server": "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n",
}

GOOD_LEAF = """basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

KEYGEN = {
    "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p192": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-192"],
    # Curves at security level 2 or above that no TLS signature scheme takes (ECDSA signs TLS
    # handshakes on P-256, P-384 and P-521 only).
    "p224": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"],
    "secp256k1": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
    "brainpool": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"],
    "rsa1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    # DSA-2048, which TLS 1.2 signs with: from parameters the PKI's user makes first (dsa.param
    # in its root: `openssl genpkey -genparam`, seconds of work only the DSA tests need).
    "dsa": ["-paramfile", "dsa.param"],
}


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


class StrictPki:
    """Files under `root`: NAME.crt / NAME.key (NAME.chain.crt = leaf + its intermediate)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._serial = 100

    def path(self, name: str) -> str:
        return str(self.root / name)

    def _key(self, name: str, key: str) -> str:
        _run("genpkey", *KEYGEN[key], "-out", f"{name}.key", cwd=self.root)
        return f"{name}.key"

    def _ext(self, name: str, body: str) -> str:
        (self.root / f"{name}.ext").write_text("[ e ]\n" + body)
        return f"{name}.ext"

    def ca(self, name: str, ext: str = GOOD_CA, issuer: str | None = None) -> str:
        """A root (issuer None) or an intermediate signed by `issuer`."""
        key = self._key(name, "ec")
        extfile = self._ext(name, ext)
        if issuer is None:
            _run("req", "-new", "-x509", "-key", key, "-subj", f"/O=mtlsd strict/CN={name}",
                 "-days", "3650", "-config", extfile, "-extensions", "e", "-out", f"{name}.crt",
                 cwd=self.root)
        else:
            self._sign(name, key, f"/O=mtlsd strict/CN={name}", extfile, issuer, "sha256")
        return self.path(f"{name}.crt")

    def leaf(self, name: str, issuer: str, usage: str, ext: str | None = None,
             key: str = "ec", md: str = "sha256", subject: str | None = None,
             intermediate: str | None = None) -> str:
        """A leaf for `usage` (client | server) signed by `issuer`; `ext` replaces the whole
        profile (USAGE_EXT is appended unless `ext` is given)."""
        k = self._key(name, key)
        body = ext if ext is not None else GOOD_LEAF + USAGE_EXT[usage].format(name=name)
        extfile = self._ext(name, body)
        self._sign(name, k, f"/O=mtlsd strict/CN={name}" if subject is None else subject,
                   extfile, issuer, md)
        chain = (self.root / f"{name}.crt").read_text()
        if intermediate:
            chain += (self.root / f"{intermediate}.crt").read_text()
        (self.root / f"{name}.chain.crt").write_text(chain)
        return self.path(f"{name}.crt")

    def _sign(self, name: str, key: str, subject: str, extfile: str, issuer: str,
              md: str) -> None:
        self._serial += 1
        _run("req", "-new", "-key", key, "-subj", subject, "-out", f"{name}.csr", cwd=self.root)
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey",
             f"{issuer}.key", "-set_serial", str(self._serial), "-days", "30", f"-{md}",
             "-extfile", extfile, "-extensions", "e", "-out", f"{name}.crt", cwd=self.root)


def openssl_strict_verify(pki: StrictPki, anchors: list[str], cert: str,
                          untrusted: str | None = None) -> subprocess.CompletedProcess:
    """`openssl verify -x509_strict -partial_chain` with `anchors` as the only trust."""
    bundle = pki.root / ("anchors-" + "-".join(Path(a).stem for a in anchors) + ".pem")
    bundle.write_text("".join(Path(a).read_text() for a in anchors))
    args = ["openssl", "verify", "-x509_strict", "-partial_chain", "-CAfile", str(bundle)]
    if untrusted:
        args += ["-untrusted", untrusted]
    return subprocess.run([*args, cert], capture_output=True, text=True, timeout=30)
