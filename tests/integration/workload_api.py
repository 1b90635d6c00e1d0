"""A SPIFFE Workload API server for the tests: Python grpcio (Debian's python3-grpcio), its code
generated at test time by grpc_tools (python3-grpc-tools) from the same src/spiffe/workload.proto
mtlsd is built from. It serves X.509-SVIDs issued from the test PKI over a unix socket, can
rotate them and change the bundles while mtlsd's stream stays open, and can disappear.

Like a real agent, it refuses a FetchX509SVID call without the `workload.spiffe.io: true`
metadata (InvalidArgument), and records every call it saw, so a test can tell that mtlsd sent it.
"""

from __future__ import annotations

import atexit
import importlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki import REPO_ROOT, Pki, write_cert_and_key

PROTO = REPO_ROOT / "src" / "spiffe" / "workload.proto"
_stubs = None


def stubs():
    """(workload_pb2, workload_pb2_grpc), generated once per test session."""
    global _stubs
    if _stubs is None:
        out = Path(tempfile.mkdtemp(prefix="mtlsd-proto-"))
        atexit.register(shutil.rmtree, out, True)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
                        f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)],
                       check=True, capture_output=True, timeout=60)
        sys.path.insert(0, str(out))
        _stubs = (importlib.import_module("workload_pb2"),
                  importlib.import_module("workload_pb2_grpc"))
    return _stubs


@dataclass
class Svid:
    spiffe_id: str
    cert_der: bytes      # leaf only
    key_der: bytes       # PKCS#8
    serial: str          # upper-case hex, as mtlsd logs it
    cert_pem: str        # file paths, for Python ssl on the other side of a test
    key_pem: str


_serial = [0x5F1D0000]


SVID_KEY_USAGE = "critical, digitalSignature, keyAgreement"


def issue_svid(pki: Pki, workdir: Path, spiffe_id: str | None, *, ca: str = "ca", days: int = 1,
               dns: str | None = None, key_usage: str = SVID_KEY_USAGE,
               uris: tuple[str, ...] = ()) -> Svid:
    """A leaf X.509-SVID signed by the PKI's `ca` (ca.crt/ca.key, or other-ca): exactly one URI
    SAN (the SPIFFE ID), CA:FALSE, serverAuth+clientAuth, an EC P-256 key. `dns` adds a DNS SAN
    (SPIRE can put DNS names in an SVID too), so that curl can check the host name. With no
    `spiffe_id`, the DNS SAN alone: a leaf shaped like an SVID that names no SPIFFE ID.
    `key_usage` (openssl's keyUsage line) and `uris` (more URI SANs) make one that is no
    X.509-SVID."""
    _serial[0] += 1
    serial = _serial[0]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir / f"svid-{serial:X}"
    ext = base.with_suffix(".ext")
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   f"keyUsage = {key_usage}\n"
                   "extendedKeyUsage = serverAuth, clientAuth\n"
                   "subjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\n"
                   "subjectAltName = critical, "
                   + ", ".join(([f"URI:{spiffe_id}"] if spiffe_id else [])
                               + [f"URI:{u}" for u in uris]
                               + ([f"DNS:{dns}"] if dns else [])) + "\n")
    key, csr, crt = (str(base) + s for s in (".key", ".csr", ".crt"))

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    run("req", "-new", "-key", key, "-subj", "/O=SPIFFE", "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", pki.path(f"{ca}.crt"), "-CAkey", pki.path(f"{ca}.key"),
        "-set_serial", str(serial), "-days", str(days), "-extfile", str(ext), "-out", crt)
    der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True,
                         capture_output=True, timeout=30).stdout
    key_der = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", key, "-outform",
                              "DER"], check=True, capture_output=True, timeout=30).stdout
    return Svid(spiffe_id, der, key_der, f"{serial:X}", crt, key)


def issue_svid_valid(pki: Pki, workdir: Path, spiffe_id: str, not_before: datetime,
                     not_after: datetime) -> Svid:
    """As issue_svid, valid from `not_before` to `not_after`: python3-cryptography, since
    Debian 12's `openssl x509 -req` cannot date a certificate in the past."""
    _serial[0] += 1
    serial = _serial[0]
    ca_cert = x509.load_pem_x509_certificate(Path(pki.path("ca.crt")).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(pki.path("ca.key")).read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(ca_key, hashes.SHA256()))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    crt, key_path = write_cert_and_key(cert, key, workdir / f"svid-{serial:X}.crt",
                                       workdir / f"svid-{serial:X}.key")
    return Svid(spiffe_id, cert.public_bytes(serialization.Encoding.DER),
                key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
                f"{serial:X}", crt, key_path)


def der_of(pki: Pki, name: str) -> bytes:
    """A PKI certificate (ca, other-ca, ...) as DER, for a bundle."""
    return subprocess.run(["openssl", "x509", "-in", pki.path(f"{name}.crt"), "-outform", "DER"],
                          check=True, capture_output=True, timeout=30).stdout


@dataclass
class State:
    svid: Svid | None = None
    bundle: bytes = b""
    federated: dict[str, bytes] = field(default_factory=dict)


class WorkloadApi:
    """The server. `publish()` sends the current state to every open stream (and to later ones);
    nothing is sent before the first publish (a real agent holds the call until it can answer).
    """

    def __init__(self, socket_path: str):
        pb2, pb2_grpc = stubs()
        self.pb2 = pb2
        self.socket_path = socket_path
        self.state = State()
        self.calls: list[dict] = []      # metadata of every call
        self.refused = 0
        self.denial: tuple | None = None  # (grpc.StatusCode, details) while deny()ing
        self._streams: list[queue.Queue] = []
        self._lock = threading.Lock()
        api = self

        class Servicer(pb2_grpc.SpiffeWorkloadAPIServicer):
            def FetchX509SVID(self, request, context):
                metadata = dict(context.invocation_metadata())
                with api._lock:
                    api.calls.append(metadata)
                if metadata.get("workload.spiffe.io") != "true":
                    api.refused += 1
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  "security header missing from request")
                q: queue.Queue = queue.Queue()
                with api._lock:
                    denial = api.denial
                    if denial is None:
                        api._streams.append(q)
                        if api.state.svid is not None:
                            q.put(api._response())
                if denial is not None:
                    context.abort(*denial)
                try:
                    while context.is_active():
                        try:
                            item = q.get(timeout=0.1)
                        except queue.Empty:
                            continue
                        if item is None:
                            return
                        if isinstance(item, tuple):  # deny(): the call ends with that status
                            context.abort(*item)
                        yield item
                finally:
                    with api._lock:
                        api._streams.remove(q)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(Servicer(), self.server)
        self.server.add_insecure_port(f"unix:{socket_path}")
        self.server.start()

    def _response(self):
        s = self.state
        svid = self.pb2.X509SVID(spiffe_id=s.svid.spiffe_id, x509_svid=s.svid.cert_der,
                                 x509_svid_key=s.svid.key_der, bundle=s.bundle)
        return self.pb2.X509SVIDResponse(svids=[svid], federated_bundles=s.federated)

    def publish(self, svid: Svid | None = None, *, bundle: bytes | None = None,
                federated: dict[str, bytes] | None = None) -> None:
        with self._lock:
            if svid is not None:
                self.state.svid = svid
            if bundle is not None:
                self.state.bundle = bundle
            if federated is not None:
                self.state.federated = federated
            for q in self._streams:
                q.put(self._response())

    def deny(self, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED,
             details: str = "no identity issued") -> None:
        """The agent gives the caller no identity (SPIRE, when no registration entry matches
        it, e.g. once its entry is deleted): every open call ends with `code` after what it
        sent, and every later call is refused with it, until allow()."""
        with self._lock:
            self.denial = (code, details)
            for q in self._streams:
                q.put(self.denial)

    def allow(self) -> None:
        """Calls are answered again (with the state published)."""
        with self._lock:
            self.denial = None

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def stop(self) -> None:
        """The agent goes away: every stream ends, the socket closes."""
        with self._lock:
            for q in self._streams:
                q.put(None)
        self.server.stop(0).wait(5)
