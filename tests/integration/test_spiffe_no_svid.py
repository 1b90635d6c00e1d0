"""tls.spiffe before the first X.509-SVID: nothing is relayed, and the refusal says why.

A client-mode listener whose `server_auth.ca` files could judge the remote without a bundle must
still not connect without its SVID: the remote here (Python ssl) asks for a client certificate
but does not insist, as many do, and would take the app's bytes as from nobody.
"""

from __future__ import annotations

import socket
import ssl
import threading

from mtlsd_harness import daemon_config, server_listener
from tls_remote import ThreadedServer, plain_exchange
from workload_api import WorkloadApi, der_of, issue_svid

SERVER_ID = "spiffe://example.org/ns/prod/sa/mtlsd"
NO_SVID = "no X.509-SVID from the SPIFFE Workload API yet"


class CertOptionalRemote(ThreadedServer):
    """A TLS echo server asking for a client certificate of the PKI root without requiring
    one; records each TCP connection and the client certificate's serial ("" for none)."""

    def __init__(self, pki):
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
        self.ctx.load_verify_locations(pki.path("ca.crt"))
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.connections = 0
        self.client_serials: list[str] = []
        self.received = b""
        self._lock = threading.Lock()
        self.start()

    def _one(self, conn):
        with self._lock:
            self.connections += 1
        conn.settimeout(10)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                peer = s.getpeercert() or {}
                self.client_serials.append(peer.get("serialNumber", "").lstrip("0"))
                while data := s.recv(65536):
                    self.received += data
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def test_a_client_mode_listener_connects_nowhere_until_its_first_svid(start_mtlsd, pki,
                                                                      short_tmp, tmp_path):
    socket_path = str(short_tmp / "agent.sock")  # no agent yet
    remote = CertOptionalRemote(pki)
    listener = {
        "name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
        "upstream": remote.address,
        "tls": {"spiffe": {"workload_api": f"unix:{socket_path}"}},
        "server_auth": {"ca": [pki.path("ca.crt")], "server_name": "localhost"},
    }
    api = None
    try:
        daemon = start_mtlsd(daemon_config([listener]))
        data, local = plain_exchange(daemon.addr("outbound"), b"app secret\n")
        line = daemon.wait_for_access(client=local)
        assert (line["result"], line["reason"]) == ("rejected", "upstream_unavailable"), line
        assert NO_SVID in line["detail"], line
        assert data == b""
        assert remote.connections == 0 and remote.received == b""
        assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="outbound",
                                   reason="upstream_unavailable") == 1

        # With its SVID the same listener reaches the same remote, presenting it.
        api = WorkloadApi(socket_path)
        svid = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(svid, bundle=der_of(pki, "ca"))
        daemon.wait_for_log(lambda l: l.get("msg") == "reloaded" and l.get("trigger") == "spiffe",
                            timeout=15)
        data, _ = plain_exchange(daemon.addr("outbound"), b"ping\n")
        assert data == b"ping\n"
        assert remote.client_serials == [svid.serial]
    finally:
        if api:
            api.stop()
        remote.close()


def test_a_server_mode_listener_without_its_svid_names_it_as_the_reason(start_mtlsd,
                                                                        make_upstream, pki,
                                                                        short_tmp):
    socket_path = str(short_tmp / "agent.sock")
    upstream = make_upstream()
    listener = server_listener(pki, upstream.address, client_auth={"ca": None}, tls={
        "cert": None, "key": None, "spiffe": {"workload_api": f"unix:{socket_path}"}})
    daemon = start_mtlsd(daemon_config([listener]))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    with socket.create_connection(daemon.addr(), timeout=10) as raw:
        local = "%s:%d" % raw.getsockname()[:2]
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"x")
                tls.recv(10)
            raise AssertionError("a handshake without a server certificate succeeded")
        except ssl.SSLError as e:
            assert "HANDSHAKE_FAILURE" in str(e).upper(), e
    line = daemon.wait_for_access(client=local)
    assert (line["result"], line["reason"]) == ("rejected", "protocol_error"), line
    assert NO_SVID in line["detail"], line
    assert daemon.scrape().get("mtlsd_handshake_failures_total", listener="inbound",
                               reason="protocol_error") == 1
    assert upstream.connection_count() == 0
