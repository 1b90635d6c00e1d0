"""tls.spiffe: mtlsd's certificate and trust bundles from the SPIFFE Workload API.

A real Workload API server (workload_api.py: Python grpcio, generated from the same .proto)
serves X.509-SVIDs made from the test PKI over a unix socket. Real clients (Python ssl, curl,
openssl s_client) keep connecting through mtlsd while the SVID rotates, the bundle changes and
the agent disappears; not one connection may fail.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from helpers import wait_until
from mtlsd_harness import curl, daemon_config, run_cli, server_listener, write_config
from tls_remote import ThreadedServer, plain_exchange
from upstream import echo
from workload_api import WorkloadApi, der_of, issue_svid, issue_svid_valid, stubs

SERVER_ID = "spiffe://example.org/ns/prod/sa/mtlsd"
REMOTE_ID = "spiffe://example.org/ns/prod/sa/remote"


def readyz(daemon):
    return daemon.admin_request("/readyz")


def wait_reloaded(daemon, serial: str, since: int = 0) -> dict:
    return daemon.wait_for_log(lambda l: l.get("msg") == "reloaded" and l.get("trigger") ==
                               "spiffe" and l.get("serial") == serial, timeout=10, since=since)


class Traffic:
    """Real clients in a loop on a thread of their own, until stop(): `connect()` is one
    connection that must succeed (it returns what identifies the other side). Every failure is
    kept; the test asserts there are none."""

    def __init__(self, connect):
        self.connect = connect
        self.ok = 0
        self.failures: list[str] = []
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                seen = self.connect()
                self.ok += 1
                if not self.seen or self.seen[-1] != seen:
                    self.seen.append(seen)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))
            self._stop.wait(0.005)  # pace: the machine is shared

    def wait_for(self, seen: str, timeout: float = 10):
        wait_until(lambda: self.seen and self.seen[-1] == seen, timeout,
                   f"clients seeing {seen} (seen {self.seen}, failures {self.failures[:3]})")

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def svid_client(pki, addr, cert="client"):
    """Python ssl: verifies mtlsd's SVID against the PKI root and its SPIFFE ID (no host name:
    an SVID is identified by its URI SAN), sends a line, reads the echo. Returns the serial.
    `cert`: a PKI certificate's name, or an Svid (issue_svid) of the client's own."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.path("ca.crt"))
    if isinstance(cert, str):
        ctx.load_cert_chain(pki.path(f"{cert}.crt"), pki.path(f"{cert}.key"))
    else:
        ctx.load_cert_chain(cert.cert_pem, cert.key_pem)

    def connect():
        with socket.create_connection(addr, timeout=10) as raw:
            with ctx.wrap_socket(raw) as tls:
                peer = tls.getpeercert()
                uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
                assert uris == [SERVER_ID], uris
                tls.sendall(b"ping\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = tls.recv(100)
                    assert chunk, "EOF before the echo"
                    data += chunk
                assert data == b"ping\n", data
                return peer["serialNumber"].lstrip("0")
    return connect


def spiffe_server_config(pki, upstream, socket_path, **tls):
    listener = server_listener(pki, upstream, tls={"cert": None, "key": None, "spiffe": {
        "workload_api": f"unix:{socket_path}", **tls}}, client_auth={"ca": None})
    return daemon_config([listener])


def test_server_mode_rotation_bundle_change_and_agent_loss(start_mtlsd, make_upstream, pki,
                                                           short_tmp, tmp_path):
    socket_path = str(short_tmp / "agent.sock")
    daemon = start_mtlsd(spiffe_server_config(pki, make_upstream(echo_or_http).address,
                                              socket_path))
    addr = daemon.addr()

    # No agent yet: not ready, and /readyz says why.
    res = readyz(daemon)
    assert res.status == 503
    assert "waiting for the first X.509-SVID" in res.text and socket_path in res.text
    before = daemon.scrape()

    api = WorkloadApi(socket_path)
    try:
        first = issue_svid(pki, tmp_path, SERVER_ID, dns="localhost")
        api.publish(first, bundle=der_of(pki, "ca"))
        wait_reloaded(daemon, first.serial)
        assert readyz(daemon).status == 200
        # mtlsd sent the security header (the server refuses calls without it).
        assert api.calls and all(c.get("workload.spiffe.io") == "true" for c in api.calls)
        assert api.refused == 0

        traffic = Traffic(svid_client(pki, addr))
        traffic.wait_for(first.serial)
        # One connection held open across everything below: never dropped.
        held = open_held(pki, addr)
        curl_ok = subprocess_curl(pki, addr)
        assert curl_ok.returncode == 0, curl_ok.stderr

        # Rotation: a new SVID on the open stream.
        second = issue_svid(pki, tmp_path, SERVER_ID, dns="localhost")
        mark = daemon.log_mark()
        api.publish(second)
        line = wait_reloaded(daemon, second.serial, since=mark)
        assert line["previous_serial"] == first.serial
        assert line["certificates_rotated"] == f"inbound:{first.serial}->{second.serial}"
        traffic.wait_for(second.serial)

        # Bundle change: the unrelated root joins our trust domain's bundle, so a workload of
        # ours that it issued is admitted now.
        other_svid = issue_svid(pki, tmp_path, "spiffe://example.org/ns/default/sa/other-ca",
                                ca="other-ca")
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            svid_client(pki, addr, cert=other_svid)()
        mark = daemon.log_mark()
        api.publish(bundle=der_of(pki, "ca") + der_of(pki, "other-ca"))
        line = wait_reloaded(daemon, second.serial, since=mark)
        assert line["bundle_cas"] == 2
        other = svid_client(pki, addr, cert=other_svid)
        assert other() == second.serial

        # The agent goes away: the last SVID keeps serving, still ready.
        mark = daemon.log_mark()
        api.stop()
        daemon.wait_for_log(lambda l: l.get("msg", "").startswith(
            "SPIFFE Workload API unavailable"), timeout=10, since=mark)
        served = traffic.ok
        wait_until(lambda: traffic.ok > served + 20, 10, "connections after the agent left")
        assert readyz(daemon).status == 200
        assert subprocess_curl(pki, addr).returncode == 0
        traffic.stop()
        held.sendall(b"still here\n")
        assert held.recv(100) == b"still here\n"
        assert held.getpeercert()["serialNumber"].lstrip("0") == first.serial
        held.close()
    finally:
        api.stop()

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.seen == [first.serial, second.serial]
    assert traffic.ok > 20  # (at least 20 after the agent left, see above)
    after = daemon.scrape()
    # First SVID, rotation, bundle change: three reloads counted.
    assert (after.get("mtlsd_config_reloads_total", result="success")
            - before.get("mtlsd_config_reloads_total", result="success")) == 3
    serials = {labels["serial"] for labels, _ in
               after.series("mtlsd_certificate_expiry_timestamp_seconds", role="server")}
    assert serials == {second.serial}
    # A clean stop with the gRPC client's threads inside the sandbox (a system call outside the
    # seccomp policy would be a SIGSYS death, -31).
    assert daemon.stop() == 0
    # gRPC's own log lines (if any) came through mtlsd's log: every stderr line is JSON.
    assert [l for l in daemon.logs() if "_raw" in l] == []


def open_held(pki, addr):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.path("ca.crt"))
    ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    tls = ctx.wrap_socket(socket.create_connection(addr, timeout=10))
    tls.sendall(b"hello\n")
    assert tls.recv(100) == b"hello\n"
    return tls


def subprocess_curl(pki, addr):
    return curl(addr, pki, "client")


def echo_or_http(conn):
    """The upstream: answers curl's GET with a 200, echoes everything else."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv()
        if not chunk:
            return
        data += chunk
    if data.startswith(b"GET "):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.shutdown_write()
        return
    conn.sendall(data)
    echo(conn)


def test_readyz_names_the_error_until_the_first_svid(start_mtlsd, make_upstream, pki, short_tmp,
                                                     tmp_path):
    """An agent that is there but refuses mtlsd's SVID (signed by a CA outside the bundle is
    fine; a key that does not match is not): the update is refused, counted as a failed reload,
    and /readyz keeps saying why."""
    socket_path = str(short_tmp / "agent.sock")
    api = WorkloadApi(socket_path)
    try:
        good = issue_svid(pki, tmp_path, SERVER_ID)
        other = issue_svid(pki, tmp_path, SERVER_ID)
        bad = type(good)(good.spiffe_id, good.cert_der, other.key_der, good.serial, "", "")
        api.publish(bad, bundle=der_of(pki, "ca"))
        daemon = start_mtlsd(spiffe_server_config(pki, make_upstream().address, socket_path))
        line = daemon.wait_for_log(lambda l: l.get("msg", "").startswith(
            "X.509-SVID update refused"), timeout=10)
        assert "does not match" in line["error"]
        res = readyz(daemon)
        assert res.status == 503 and "does not match" in res.text
        assert daemon.scrape().get("mtlsd_config_reloads_total", result="failure") >= 1
        mark = daemon.log_mark()
        api.publish(good)
        wait_reloaded(daemon, good.serial, since=mark)
        assert readyz(daemon).status == 200
        assert svid_client(pki, daemon.addr())() == good.serial
        assert daemon.running()
    finally:
        api.stop()


def test_workload_api_refuses_calls_without_the_header(short_tmp, tmp_path, pki):
    """The test server behaves like an agent: no `workload.spiffe.io: true`, no SVID."""
    socket_path = str(short_tmp / "agent.sock")
    api = WorkloadApi(socket_path)
    try:
        api.publish(issue_svid(pki, tmp_path, SERVER_ID), bundle=der_of(pki, "ca"))
        pb2, pb2_grpc = stubs()
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = pb2_grpc.SpiffeWorkloadAPIStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                next(iter(stub.FetchX509SVID(pb2.X509SVIDRequest(), timeout=5)))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stream = stub.FetchX509SVID(pb2.X509SVIDRequest(), timeout=5,
                                        metadata=(("workload.spiffe.io", "true"),))
            assert next(iter(stream)).svids[0].spiffe_id == SERVER_ID
            stream.cancel()
        assert api.refused == 1
    finally:
        api.stop()


def test_client_mode_presents_the_rotating_svid(start_mtlsd, pki, short_tmp, tmp_path):
    """mode: client: the SVID is the client certificate mtlsd presents to the remote, the bundle
    verifies the remote, whose SPIFFE ID server_auth.allow names. The remote (Python ssl) records
    which client certificate each connection showed."""
    socket_path = str(short_tmp / "agent.sock")
    remote_svid = issue_svid(pki, tmp_path, REMOTE_ID)
    remote = RecordingRemote(pki, remote_svid)
    api = WorkloadApi(socket_path)
    try:
        first = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(first, bundle=der_of(pki, "ca"))
        listener = {
            "name": "outbound", "mode": "client", "listen": "127.0.0.1:0",
            "upstream": remote.address,
            "tls": {"spiffe": {"workload_api": f"unix:{socket_path}"}},
            "server_auth": {"allow": {"spiffe_ids": [REMOTE_ID]}},
        }
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, first.serial)
        addr = daemon.addr("outbound")

        def connect():
            data, _ = plain_exchange(addr, b"ping\n")
            assert data == b"ping\n", data
            return remote.client_serials[-1]
        traffic = Traffic(connect)
        traffic.wait_for(first.serial)
        second = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(second)
        traffic.wait_for(second.serial)
        traffic.stop()

        # A remote whose SPIFFE ID is not the one named is refused: the bundle alone is not
        # enough, and the app's bytes never reach it.
        intruder = RecordingRemote(pki, issue_svid(pki, tmp_path,
                                                   "spiffe://example.org/ns/prod/sa/intruder"))
        try:
            daemon2 = start_mtlsd(daemon_config([{**listener, "upstream": intruder.address}]))
            wait_reloaded(daemon2, second.serial)
            data, _ = plain_exchange(daemon2.addr("outbound"), b"secret\n")
            assert data == b""
            line = daemon2.wait_for_access(result="rejected")
            assert line["reason"] == "not_authorized", line
            assert daemon.running() and daemon2.running()
        finally:
            intruder.close()
    finally:
        api.stop()
        remote.close()
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.seen == [first.serial, second.serial]


class RecordingRemote(ThreadedServer):
    """A TLS server presenting an SVID, requiring a client certificate from the PKI root,
    echoing, and recording each client certificate's serial."""

    def __init__(self, pki, svid):
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(svid.cert_pem, svid.key_pem)
        self.ctx.load_verify_locations(pki.path("ca.crt"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.client_serials: list[str] = []
        self.start()

    def _one(self, conn):
        conn.settimeout(10)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                self.client_serials.append(s.getpeercert()["serialNumber"].lstrip("0"))
                while data := s.recv(65536):
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


# A workload of the federated trust domain, for an SVID its own CA (other-ca) issues.
OTHER_ORG_CLIENT = "spiffe://other.org/ns/default/sa/client"


def federating_agent(pki, short_tmp, tmp_path):
    """A Workload API serving our SVID, our bundle (ca) and other.org's (other-ca):
    (its socket path, the server, the SVID)."""
    socket_path = str(short_tmp / "agent.sock")
    api = WorkloadApi(socket_path)
    svid = issue_svid(pki, tmp_path, SERVER_ID)
    api.publish(svid, bundle=der_of(pki, "ca"),
                federated={"spiffe://other.org": der_of(pki, "other-ca")})
    return socket_path, api, svid


def test_trust_domains_select_federated_bundles(start_mtlsd, make_upstream, pki, short_tmp,
                                                tmp_path):
    """Two listeners on one agent socket (one stream): the one listing other.org in
    trust_domains admits a client of that trust domain's CA (a federated bundle); the other
    trusts its own trust domain's bundle only."""
    socket_path, api, svid = federating_agent(pki, short_tmp, tmp_path)
    partner = issue_svid(pki, tmp_path, OTHER_ORG_CLIENT, ca="other-ca")
    try:
        upstream = make_upstream().address
        spiffe = {"workload_api": f"unix:{socket_path}"}
        federated = server_listener(pki, upstream, name="federated", client_auth={"ca": None},
                                    tls={"cert": None, "key": None,
                                         "spiffe": {**spiffe, "trust_domains": ["other.org"]}})
        own = server_listener(pki, upstream, name="own", client_auth={"ca": None},
                              tls={"cert": None, "key": None, "spiffe": spiffe})
        daemon = start_mtlsd(daemon_config([federated, own]))
        wait_reloaded(daemon, svid.serial)
        assert readyz(daemon).status == 200
        assert svid_client(pki, daemon.addr("federated"), cert=partner)() == svid.serial
        assert svid_client(pki, daemon.addr("own"))() == svid.serial
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            svid_client(pki, daemon.addr("own"), cert=partner)()
        refused = daemon.wait_for_access(listener="own", result="rejected")
        assert refused["reason"] == "unknown_ca", refused
        assert api.open_streams() == 1
        # A reload (SIGHUP) rebuilds every listener from the files and keeps the SVID it has.
        mark = daemon.log_mark()
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log(lambda l: l.get("msg") == "reloaded" and l.get("trigger") == "SIGHUP",
                            since=mark)
        assert readyz(daemon).status == 200
        assert svid_client(pki, daemon.addr("federated"), cert=partner)() == svid.serial
    finally:
        api.stop()


def test_a_bundle_update_that_withdraws_trust_closes_open_connections(
        start_mtlsd, make_upstream, pki, short_tmp, tmp_path):
    """Review: a Workload API update that dropped a federated trust domain refused new
    handshakes of its peers but left their open connections relaying, where a file reload that
    removes a CA closes them (reload_rejudged)."""
    socket_path, api, svid = federating_agent(pki, short_tmp, tmp_path)
    try:
        spiffe = {"workload_api": f"unix:{socket_path}", "trust_domains": ["other.org"]}
        listener = server_listener(pki, make_upstream().address, client_auth={"ca": None},
                                   tls={"cert": None, "key": None, "spiffe": spiffe})
        daemon = start_mtlsd(daemon_config([listener]))
        wait_reloaded(daemon, svid.serial)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(pki.path("ca.crt"))
        partner = issue_svid(pki, tmp_path, OTHER_ORG_CLIENT, ca="other-ca")
        ctx.load_cert_chain(partner.cert_pem, partner.key_pem)
        with ctx.wrap_socket(socket.create_connection(daemon.addr(), timeout=10)) as held:
            held.sendall(b"one\n")
            assert held.recv(100) == b"one\n"
            local = "%s:%d" % held.getsockname()[:2]
            mark = daemon.log_mark()
            api.publish(federated={})  # other.org is federated no more
            daemon.wait_for_log(lambda l: l.get("msg") == "reloaded" and
                                l.get("trigger") == "spiffe", since=mark)
            line = daemon.wait_for_access(client=local)
            assert line["termination"] == "reload_rejudged", line
            assert line["reason"] == "unknown_ca", line
            assert held.recv(100) == b"", "the connection is still open"
    finally:
        api.stop()


def test_an_update_the_agent_repeats_changes_nothing(start_mtlsd, make_upstream, pki,
                                                    short_tmp, tmp_path):
    """Review: an agent that resent the same update (a stream ending after each message) made
    mtlsd rebuild its listeners, log `reloaded` and count a reload each time; with re-judging,
    every open connection would be judged again too. Only a change does that now."""
    socket_path = str(short_tmp / "agent.sock")
    api = WorkloadApi(socket_path)
    try:
        first = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(first, bundle=der_of(pki, "ca"))
        daemon = start_mtlsd(spiffe_server_config(pki, make_upstream().address, socket_path))
        wait_reloaded(daemon, first.serial)
        before = daemon.scrape().get("mtlsd_config_reloads_total", result="success")
        mark = daemon.log_mark()
        for _ in range(3):
            api.publish(first)  # the same update again
        second = issue_svid(pki, tmp_path, SERVER_ID)
        api.publish(second)  # messages arrive in order: the repeats came before this one
        wait_reloaded(daemon, second.serial, since=mark)
        reloads = [l for l in daemon.logs()[mark:] if l.get("msg") == "reloaded"]
        assert [l["serial"] for l in reloads] == [second.serial], reloads
        assert daemon.scrape().get("mtlsd_config_reloads_total", result="success") == before + 1
        # Review: after a refused update, the agent resending the one served left
        # mtlsd_config_last_reload_successful at 0 until the next rotation.
        mark = daemon.log_mark()
        api.publish(bundle=der_of(pki, "client"))  # not a CA: refused
        daemon.wait_for_log(lambda l: l.get("msg", "").startswith("X.509-SVID update refused"),
                            since=mark)
        assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 0
        api.publish(bundle=der_of(pki, "ca"))  # what is served, again
        daemon.wait_for_log(lambda l: "superseded" in l.get("msg", ""), since=mark)
        assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 1
    finally:
        api.stop()


def test_a_quiet_agent_is_called_again(start_mtlsd, make_upstream, pki, short_tmp, tmp_path):
    """Review: an agent that took the call and never answered (or whose stream went quiet) was
    waited for without end; the last SVID would have served until it expired. A call that brings
    nothing within 15 s is made again, and so is one that brings no new SVID by 3/4 of the last
    one's lifetime (at least 30 s after its message). The SVID served meanwhile is kept."""
    socket_path = str(short_tmp / "agent.sock")
    api = WorkloadApi(socket_path)  # holds every call until the first publish
    try:
        daemon = start_mtlsd(spiffe_server_config(pki, make_upstream().address, socket_path))
        wait_until(lambda: len(api.calls) == 1, 10, "mtlsd's first call")
        line = daemon.wait_for_log(lambda l: "sent nothing within 15s" in l.get("error", ""),
                                   timeout=25)
        assert line["msg"].startswith("SPIFFE Workload API unavailable"), line
        wait_until(lambda: len(api.calls) == 2, 10, "a second call")
        # An SVID past 3/4 of its lifetime (an agent that cannot rotate it): the next message is
        # due 30 s after it.
        now = datetime.now(timezone.utc)
        late = issue_svid_valid(pki, tmp_path, SERVER_ID, now - timedelta(hours=1),
                                now + timedelta(minutes=10))
        api.publish(late, bundle=der_of(pki, "ca"))
        reloaded = wait_reloaded(daemon, late.serial)
        published = time.monotonic()
        mark = daemon.log_mark()
        line = daemon.wait_for_log(lambda l: "by 3/4 of the last one's lifetime" in
                                   l.get("error", ""), timeout=45, since=mark)
        assert time.monotonic() - published >= 25, (reloaded, line)
        wait_until(lambda: len(api.calls) == 3, 10, "a third call")
        # The same SVID again: nothing rebuilt, still served, still ready.
        assert svid_client(pki, daemon.addr())() == late.serial
        assert readyz(daemon).status == 200
        assert not [l for l in daemon.logs()[mark:] if l.get("msg") == "reloaded"]
        assert daemon.scrape().get("mtlsd_config_last_reload_successful") == 1
    finally:
        api.stop()


def test_check_and_verify_without_the_agent(mtlsd_bin, pki, tmp_path):
    """`check` validates a tls.spiffe listener without contacting the agent (env read from
    SPIFFE_ENDPOINT_SOCKET); `verify` says it cannot judge against bundles it does not fetch."""
    listener = server_listener(pki, "127.0.0.1:9", client_auth={"ca": None},
                               tls={"cert": None, "key": None, "spiffe": {"workload_api": "env"}})
    cfg = write_config(tmp_path / "m.yaml", daemon_config([listener]))
    env_run = subprocess.run([mtlsd_bin, "check", "--config", str(cfg)], capture_output=True,
                             text=True, timeout=30,
                             env={"SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/agent.sock"})
    assert env_run.returncode == 0, env_run.stderr
    unset = run_cli(mtlsd_bin, "check", "--config", str(cfg))
    assert unset.returncode == 1
    assert "m.yaml:" in unset.stderr and "SPIFFE_ENDPOINT_SOCKET is not set" in unset.stderr
    res = subprocess.run([mtlsd_bin, "verify", "--config", str(cfg), "--listener", "inbound",
                          "--cert", pki.path("client.crt")], capture_output=True, text=True,
                         timeout=30, env={"SPIFFE_ENDPOINT_SOCKET": "unix:/run/agent.sock"})
    assert res.returncode == 2
    assert "which verify does not fetch" in res.stderr
