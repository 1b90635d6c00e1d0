"""The test PKI made by scripts/gen-pki.sh, and small helpers around it."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN_PKI = REPO_ROOT / "scripts" / "gen-pki.sh"


class Pki:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def sha256_fingerprint(self, cert: str, colons: bool = True) -> str:
        """Uppercase hex SHA-256 of the certificate's DER, `AA:BB:...` style."""
        der = ssl.PEM_cert_to_DER_cert((self.root / cert).read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        if colons:
            return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        return digest

    def openssl(self, *args: str) -> subprocess.CompletedProcess:
        """Run the openssl CLI with OUTDIR/openssl.cnf (e.g. `ca -name root_ca -revoke X`)."""
        cmd = ["openssl", args[0], "-config", self.path("openssl.cnf"), *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True,
                              env={"LEAF_DNS": "unused.invalid", "PATH": "/usr/bin:/bin"})

    def copy_to(self, dest: Path) -> "Pki":
        """A private copy (for tests that revoke or re-issue without touching
        the shared one). openssl.cnf holds absolute paths, so rewrite them."""
        dest = Path(dest)
        shutil.copytree(self.root, dest)
        # The shared PKI is read-only (shared_pki.py): the copy is the test's to write.
        for path in [dest, *dest.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        cnf = dest / "openssl.cnf"
        cnf.write_text(cnf.read_text().replace(str(self.root), str(dest)))
        return Pki(dest)


def generate_pki(outdir: Path, env: dict | None = None) -> Pki:
    """`env` adds variables for gen-pki.sh (GEN_PKI_OCSP_URL, GEN_PKI_CRL_URL, ...)."""
    proc = subprocess.run([str(GEN_PKI), str(outdir)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"gen-pki.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return Pki(outdir)


def write_cert_and_key(cert, key, cert_path: Path, key_path: Path) -> tuple[str, str]:
    """Writes a `cryptography` certificate (PEM) and its private key (unencrypted PKCS#8 PEM);
    returns both paths as strings, as client_context(certfile=..., keyfile=...) takes them."""
    from cryptography.hazmat.primitives import serialization
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
