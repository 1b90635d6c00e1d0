"""Loopback HTTP servers for the revocation tests: an OCSP responder and CRL
distribution points.

`openssl ocsp -port N` binds every address (../shared/toolchain.md), so the
OCSP responder here is a loopback-only Python HTTP front that answers each
POST by running the real responder once:

    openssl ocsp -index INDEX -CA CA -rsigner SIGNER -rkey KEY \\
                 -reqin REQ -respout RESP -nmin MINUTES

The same server serves CRLs (GET) from bytes a test puts in `crls`. It counts
requests, and can be slowed down, made to fail, or stopped and restarted on
the same port (certificates carry its URL, so the port must not change).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class OcspConfig:
    index: str             # the CA database (index.txt)
    ca: str                # the issuer's certificate
    signer: str            # the responder's certificate (the CA itself or a delegate)
    key: str               # and its key
    next_update_minutes: Optional[int] = 5   # None: no nextUpdate in responses


@dataclass
class Counters:
    ocsp: int = 0
    ocsp_bodies: list = field(default_factory=list)  # each OCSP request's DER, in arrival order
    crl: dict = field(default_factory=dict)   # path -> GET count


class RevocationServer:
    """HTTP on 127.0.0.1: POST /ocsp (OCSP), GET /<name> (CRLs from `crls`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ocsp: Optional[OcspConfig] = None
        self.crls: dict[str, bytes] = {}      # "/root.crl" -> CRL (DER or PEM)
        self.delay = 0.0                      # seconds before answering (a slow server)
        self.slow_paths: dict[str, float] = {}  # path -> seconds before a GET for it is answered
        self.fail_status: Optional[int] = None  # answer every request with this HTTP status
        self.ocsp_body: Optional[bytes] = None  # answer every OCSP request with these bytes
        self.counters = Counters()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0
        self.start()

    # --- addresses -------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def ocsp_url(self) -> str:
        return self.url("/ocsp")

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on the same port."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with owner._lock:
                    owner.counters.ocsp += 1
                    owner.counters.ocsp_bodies.append(body)
                owner._maybe_wait()
                if owner.fail_status:
                    return self._send(owner.fail_status, b"unavailable\n", "text/plain")
                if owner.ocsp_body is not None:
                    return self._send(200, owner.ocsp_body, "application/ocsp-response")
                if not self.path.startswith("/ocsp") or owner.ocsp is None:
                    return self._send(404, b"no responder\n", "text/plain")
                try:
                    resp = owner._answer_ocsp(body)
                except subprocess.CalledProcessError as exc:
                    return self._send(500, exc.stderr or b"", "text/plain")
                self._send(200, resp, "application/ocsp-response")

            def do_GET(self):
                with owner._lock:
                    owner.counters.crl[self.path] = owner.counters.crl.get(self.path, 0) + 1
                    crl = owner.crls.get(self.path)
                    slow = owner.slow_paths.get(self.path, 0.0)
                owner._maybe_wait()
                if slow:
                    time.sleep(slow)
                if owner.fail_status:
                    return self._send(owner.fail_status, b"unavailable\n", "text/plain")
                if crl is None:
                    return self._send(404, b"no such CRL\n", "text/plain")
                self._send(200, crl, "application/pkix-crl")

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def reset(self) -> None:
        if not self.running:
            self.start()
        with self._lock:
            self.delay = 0.0
            self.slow_paths = {}
            self.fail_status = None
            self.ocsp_body = None
            self.crls = {}
            self.counters = Counters()

    def close(self) -> None:
        self.stop()

    # --- behaviour --------------------------------------------------------------

    def _maybe_wait(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    def _answer_ocsp(self, request: bytes) -> bytes:
        cfg = self.ocsp
        with tempfile.TemporaryDirectory(prefix="ocsp-") as tmp:
            req, resp = os.path.join(tmp, "req.der"), os.path.join(tmp, "resp.der")
            with open(req, "wb") as f:
                f.write(request)
            cmd = ["openssl", "ocsp", "-index", cfg.index, "-CA", cfg.ca,
                   "-rsigner", cfg.signer, "-rkey", cfg.key, "-reqin", req, "-respout", resp]
            if cfg.next_update_minutes is not None:
                cmd += ["-nmin", str(cfg.next_update_minutes)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
            with open(resp, "rb") as f:
                return f.read()

    def ocsp_requests(self) -> int:
        with self._lock:
            return self.counters.ocsp

    def ocsp_requests_for(self, serial: bytes) -> int:
        """OCSP requests that ask about the certificate with this serial number (its DER
        INTEGER content, as in the request's CertID)."""
        with self._lock:
            return sum(1 for b in self.counters.ocsp_bodies if serial in b)

    def crl_requests(self, path: str) -> int:
        with self._lock:
            return self.counters.crl.get(path, 0)


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
