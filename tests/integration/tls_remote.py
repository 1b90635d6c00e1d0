"""A TLS server for client-mode tests (Python ssl, any certificate and key, even weak or
mismatched ones), and the local app's side of a client-mode listener."""

from __future__ import annotations

import socket
import ssl
import threading

from clients import fmt_addr

TIMEOUT = 10.0


class Remote:
    """A TLS server (Python ssl, security level 0) presenting `cert` (+ chain) with `key`;
    echoes what it reads."""

    def __init__(self, certfile: str, keyfile: str, tls12: bool = False):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.ctx.load_cert_chain(certfile, keyfile)
        if tls12:
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

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

    def close(self):
        self.sock.close()


def plain_exchange(addr, payload: bytes = b"ping\n"):
    with socket.create_connection(addr, timeout=TIMEOUT) as sock:
        local = fmt_addr(sock.getsockname())
        data = b""
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # mtlsd may have closed already (a refused remote)
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    return data, local
