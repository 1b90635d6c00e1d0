"""A TLS server for client-mode tests (Python ssl, any certificate and key, even weak or
mismatched ones; or `openssl s_server`), and the local app's side of a client-mode listener."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from contextlib import contextmanager

from clients import fmt_addr

TIMEOUT = 10.0


class ThreadedServer:
    """A TCP server on `host` (127.0.0.1 unless told; bound at once: `address`, with the port),
    each connection served by `_one(conn)` on a thread of its own once start() was called,
    until close()."""

    def __init__(self, host: str = "127.0.0.1"):
        v6 = ":" in host
        self.sock = socket.create_server((host, 0),
                                         family=socket.AF_INET6 if v6 else socket.AF_INET)
        self.port = self.sock.getsockname()[1]
        self.address = ("[%s]:%d" if v6 else "%s:%d") % (host, self.port)

    def start(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        raise NotImplementedError

    def close(self):
        self.sock.close()


class Remote(ThreadedServer):
    """A TLS server (Python ssl, security level 0) presenting `cert` (+ chain) with `key`;
    echoes what it reads."""

    def __init__(self, certfile: str, keyfile: str, tls12: bool = False,
                 host: str = "127.0.0.1"):
        super().__init__(host)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.ctx.load_cert_chain(certfile, keyfile)
        if tls12:
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.handshakes = 0
        self.start()

    def _one(self, conn):
        conn.settimeout(TIMEOUT)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                self.handshakes += 1
                while data := s.recv(65536):
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def plain_exchange(addr, payload: bytes = b"ping\n"):
    """Sends `payload` to a client-mode listener as the local app, half-closes, and returns what
    came back and the app's address. mtlsd resets the app's socket on a refusal, which can come
    before connect() returns (a refusal at accept: no SVID yet): that is an exchange with nothing
    back too, so the socket is bound first for its address to be known (CI saw the reset)."""
    host, port = addr
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((host, 0))
        local = fmt_addr(sock.getsockname())
        try:
            sock.connect((host, port))
        except ConnectionResetError:
            return b"", local
        data = b""
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # mtlsd may have closed already (a refused remote)
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    return data, local


@contextmanager
def s_server(cert: str, key: str, *extra: str):
    """`openssl s_server` on 127.0.0.1 presenting `cert` (echoing each line reversed: -rev);
    yields its address. `extra`: more options, e.g. -status_file DER."""
    proc = subprocess.Popen(["openssl", "s_server", "-cert", cert, "-key", key,
                             "-accept", "127.0.0.1:0", "-rev", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        for line in proc.stdout:
            if line.startswith("ACCEPT "):
                address = line.split()[1].strip()
                break
        assert address, "s_server did not start"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never block on a pipe
        yield address
    finally:
        proc.kill()
        proc.wait()
