"""Client mode and a remote's stapled OCSP response over time (review, findings C and E).

- C: a session made by a full handshake that accepted a stapled "good" answer resumes only until
  that answer's nextUpdate: the next connection after it is a full handshake, which sees the
  remote's new staple (here "revoked") and refuses it. Before, the staple was checked on full
  handshakes only and every connection resumed (each resumption bringing a new ticket).
- E: with `ocsp: leaf` and recheck_established, a stapled "good" answer is the leaf's OCSP
  answer and is watched like a fetched one: once past its nextUpdate the responder is asked
  again, and a "revoked" closes the open connection. Before, no request was made, nothing was
  cached, and the background refresh never asked about the remote.

The remote is a second mtlsd (server mode, stapling: true) for server-ocsp.crt, fed by the
loopback responder serving one fixed response at a time (python3-cryptography): first a "good"
valid for a few seconds, then a "revoked" valid for an hour.
"""

from __future__ import annotations

import datetime
import socket
import time

from clients import fmt_addr
from helpers import wait_until
from mtlsd_harness import daemon_config
from revocation_env import *  # noqa: F401,F403  (fixtures)
from test_client_revocation import assert_closed_as_revoked, outbound
from test_ocsp_revocation_stands import signed_answer
from test_revocation_stapling import s_client_status, stapling_listener
from tls_remote import plain_exchange

GOOD_FOR = 6  # seconds: the first answer's nextUpdate (the remote starts within it)


def answer(rpki, revoked: bool, valid_for: datetime.timedelta) -> tuple[bytes, float]:
    """A signed answer for server-ocsp.crt and its nextUpdate (unix seconds)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    earlier = now - datetime.timedelta(seconds=1)
    body = signed_answer(rpki, "server-ocsp.crt", earlier, now + valid_for,
                         earlier if revoked else None)
    return body, (now + valid_for).timestamp()


def stapling_remote(start_mtlsd, make_upstream, rpki):
    up = make_upstream()
    remote = start_mtlsd(daemon_config([stapling_listener(rpki, up.address)]))
    wait_until(lambda: "Cert Status: good" in s_client_status(remote.addr(), rpki),
               timeout=15, what="the remote stapling 'good'", interval=0.2)
    host, port = remote.addr()
    return remote, f"{host}:{port}"


def exchange(client) -> dict:
    """One app connection through the outbound listener: its access line. Through
    tls_remote.plain_exchange: mtlsd resets the app's socket as soon as the remote is refused,
    which can land before connect() returns (CI saw a ConnectionResetError there)."""
    _, local = plain_exchange(client.addr("outbound"))
    return client.wait_for_access(client=local)


def test_a_session_resumes_only_while_its_staple_holds(start_mtlsd, make_upstream, rpki, rv):
    rv.ocsp_body, good_until = answer(rpki, False, datetime.timedelta(seconds=GOOD_FOR))
    remote, address = stapling_remote(start_mtlsd, make_upstream, rpki)
    client = start_mtlsd(daemon_config([outbound(rpki, address)]))
    first = exchange(client)
    assert first["result"] == "accepted" and not first.get("resumed"), first
    # While the staple holds, the session resumes (the fix does not end resumption).
    if time.time() < good_until - 1:
        again = exchange(client)
        assert again["result"] == "accepted" and again.get("resumed"), again
    # The CA revokes the remote's certificate; the remote staples that once its answer lapses.
    rv.ocsp_body, _ = answer(rpki, True, datetime.timedelta(hours=1))
    wait_until(lambda: time.time() > good_until + 1
               and "Cert Status: revoked" in s_client_status(remote.addr(), rpki),
               timeout=GOOD_FOR + 20, what="the remote stapling 'revoked'", interval=0.2)
    line = exchange(client)
    assert line["result"] == "rejected" and line["reason"] == "revoked", line
    assert not line.get("resumed") and "stapled" in line.get("detail", ""), line


def test_a_stapled_good_answer_is_asked_again_and_a_revocation_closes(start_mtlsd,
                                                                      make_upstream, rpki, rv):
    rv.ocsp_body, _ = answer(rpki, False, datetime.timedelta(seconds=GOOD_FOR))
    _, address = stapling_remote(start_mtlsd, make_upstream, rpki)
    client = start_mtlsd(daemon_config([outbound(rpki, address, ocsp="leaf")]))
    sock = socket.create_connection(client.addr("outbound"), timeout=10)
    local = fmt_addr(sock.getsockname())
    sock.sendall(b"ping\n")
    assert sock.recv(100) == b"ping\n"
    # No handshake after this one: only the background refresh can learn of the revocation.
    rv.ocsp_body, _ = answer(rpki, True, datetime.timedelta(hours=1))
    sock.settimeout(GOOD_FOR + 25)
    assert_closed_as_revoked(client, sock, local)
