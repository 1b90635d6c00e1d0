"""A small HTTP forward proxy for tests (the kind egress-restricted clusters put in front of
the internet): it takes absolute-form requests ("POST http://host:port/path HTTP/1.1"),
records each one, and forwards it in origin form to the host it names. Refuses (400) an
origin-form request, so a client that forgot it was talking to a proxy is caught.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from dataclasses import dataclass


@dataclass
class ProxiedRequest:
    method: str
    target: str      # as received: the absolute URL
    host: str        # the Host header


class ForwardProxy:
    def __init__(self) -> None:
        self.requests: list[ProxiedRequest] = []
        self.refuse_with: int | None = None  # answer every request with this status itself
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _forward(self) -> None:
                with owner._lock:
                    owner.requests.append(ProxiedRequest(self.command, self.path,
                                                         self.headers.get("Host", "")))
                if owner.refuse_with:
                    self._answer(owner.refuse_with, b"the proxy's own answer\n", [])
                    return
                url = urllib.parse.urlsplit(self.path)
                if url.scheme != "http" or not url.hostname:
                    self._answer(400, b"a proxy needs an absolute http:// URL\n", [])
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length) if length else None
                origin = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("proxy-connection", "connection")}
                    origin.request(self.command, (url.path or "/") +
                                   (f"?{url.query}" if url.query else ""), body=body,
                                   headers=headers)
                    res = origin.getresponse()
                    data = res.read()
                    keep = [(k, v) for k, v in res.getheaders()
                            if k.lower() not in ("connection", "transfer-encoding",
                                                 "content-length")]
                    self._answer(res.status, data, keep)
                except OSError as exc:
                    self._answer(502, f"origin unreachable: {exc}\n".encode(), [])
                finally:
                    origin.close()

            def _answer(self, status: int, body: bytes, headers) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = _forward
            do_POST = _forward

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def seen(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
