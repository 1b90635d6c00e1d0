"""Stapling (`revocation.stapling: true`) an OCSP response that has no nextUpdate: README
("Stapling") says such a response is current only while its thisUpdate is at most 10 minutes
old, as mtlsd's own client judges it, and that an expired response is never stapled, also while
the responder is down.

Covered, with a responder of this file's own (Python `cryptography`, signed by the CA, answering
`good` with the thisUpdate and nextUpdate a test sets; `openssl ocsp` cannot back-date
thisUpdate) named by `revocation.ocsp_responder` (server.crt names no responder in an AIA):

- a response 10 min 20 s old without nextUpdate is refused at the fetch and never stapled (the
  warning says why), fetch after fetch; controls: the same age with a nextUpdate ahead, and one
  minute old without nextUpdate, are stapled;
- a response 9 min 50 s old without nextUpdate is stapled, then no longer served once 10 minutes
  have passed since its thisUpdate: while the responder keeps answering with that same
  thisUpdate (the stapler asks again in the last second and gets nothing newer), and while it is
  down. No handshake is stapled after that moment, none stops being stapled before it. The
  stapler asks again at that moment, and then with backoff: a fresh answer the responder has
  soon after is stapled within seconds (it asked again only five minutes later before).

Staples are seen with `openssl s_client -status` (Python's ssl cannot ask for one).
"""

from __future__ import annotations

import datetime
import http.server
import subprocess
import threading
import time
from typing import Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtlsd_harness import daemon_config, fmt_addr, server_listener
from helpers import wait_until

# ocsp_max_age_without_next_update (include/mtlsd/tls/revocation/ocsp.hpp): README's 10 minutes.
MAX_AGE = 600


class Responder:
    """An OCSP responder on 127.0.0.1 for one certificate: POST /ocsp answers `good`, signed by
    the issuing CA, with `this_update` (unix seconds) and `next_update` (None: no nextUpdate)."""

    def __init__(self, pki, cert: str, this_update: int, next_update: Optional[int] = None):
        self.issuer = x509.load_pem_x509_certificate(pki.read("ca.crt"))
        self.key = serialization.load_pem_private_key(pki.read("ca.key"), password=None)
        self.cert = x509.load_pem_x509_certificate(pki.read(cert))
        self.this_update = this_update
        self.next_update = next_update
        self.asked: list[float] = []  # when each request came (time.time())
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner._lock:
                    owner.asked.append(time.time())
                der = owner.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(der)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(der)
                self.close_connection = True

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ocsp"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def answer(self, request_der: bytes) -> bytes:
        request = ocsp.load_der_ocsp_request(request_der)
        if request.serial_number != self.cert.serial_number:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=self.cert, issuer=self.issuer, algorithm=request.hash_algorithm,
            cert_status=ocsp.OCSPCertStatus.GOOD, this_update=utc(self.this_update),
            next_update=utc(self.next_update) if self.next_update is not None else None,
            revocation_time=None, revocation_reason=None)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.issuer)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def requests(self) -> list[float]:
        with self._lock:
            return list(self.asked)

    def stop(self) -> None:
        """Down: connections are refused from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


def utc(unix: int) -> datetime.datetime:
    """Naive UTC, as cryptography's builders take it."""
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).replace(tzinfo=None)


@pytest.fixture
def responder(pki):
    started: list[Responder] = []

    def start(this_update: int, next_update: Optional[int] = None) -> Responder:
        r = Responder(pki, "server.crt", this_update, next_update)
        started.append(r)
        return r
    yield start
    for r in started:
        r.stop()


def stapling_daemon(start_mtlsd, make_upstream, pki, responder: Responder):
    up = make_upstream()
    listener = server_listener(pki, up.address,
                               revocation={"stapling": True, "ocsp_responder": responder.url})
    return start_mtlsd(daemon_config([listener]))


def staple(daemon, pki) -> Optional[str]:
    """One handshake asking for a staple (status_request): s_client's account of the stapled
    response, or None when the server sent none."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", fmt_addr(daemon.addr()), "-servername", "localhost",
         "-CAfile", pki.path("ca.crt"), "-cert", pki.path("client.crt"),
         "-key", pki.path("client.key"), "-status"],
        input=b"", capture_output=True, timeout=10)
    out = proc.stdout.decode(errors="replace")
    if "OCSP response: no response sent" in out:
        return None
    assert "OCSP Response Status: successful" in out, out
    return out


def fetch_refused(line: dict) -> bool:
    return line.get("msg") == "cannot refresh the stapled OCSP response"


# --- which responses are stapled -------------------------------------------------------------

@pytest.mark.parametrize("age, next_update_in, stapled", [
    (MAX_AGE + 20, None, False),   # no nextUpdate, thisUpdate 10 min 20 s old: stale
    (MAX_AGE + 20, 3600, True),    # as old, but its nextUpdate is ahead: current
    (60, None, True),              # no nextUpdate, thisUpdate a minute old: current
], ids=["10m20s-old-no-next-update", "10m20s-old-next-update-ahead", "1m-old-no-next-update"])
def test_which_responses_are_stapled(start_mtlsd, make_upstream, pki, responder, age,
                                     next_update_in, stapled):
    now = int(time.time())
    r = responder(now - age, None if next_update_in is None else now + next_update_in)
    daemon = stapling_daemon(start_mtlsd, make_upstream, pki, r)
    if stapled:
        out = wait_until(lambda: staple(daemon, pki), timeout=10, interval=0.1,
                         what="a stapled OCSP response")
        assert "Cert Status: good" in out, out
        assert ("Next Update:" in out) == (next_update_in is not None), out
        line = daemon.wait_for_log(lambda l: l.get("msg") == "stapling OCSP response")
        assert (line["next_update"] == "none") == (next_update_in is None), line
        assert not [l for l in daemon.logs() if fetch_refused(l)]
        return
    # Refused at the fetch, and again at the retry a second later: never stapled.
    line = daemon.wait_for_log(fetch_refused)
    assert "response is stale (no nextUpdate, and thisUpdate is 10 minutes old)" in line["error"], \
        line
    assert staple(daemon, pki) is None
    wait_until(lambda: len([l for l in daemon.logs() if fetch_refused(l)]) >= 2, timeout=10,
               interval=0.05, what="the retried fetch refused as well")
    assert staple(daemon, pki) is None
    assert len(r.requests()) >= 2
    assert not [l for l in daemon.logs() if l.get("msg") == "stapling OCSP response"]


# --- a staple that goes stale ------------------------------------------------------------------

LEAD = 10  # seconds the response has left (without nextUpdate) when the test starts


@pytest.mark.parametrize("responder_down, with_next_update", [
    (False, False), (False, True), (True, False)],
    ids=["answering", "answering-with-next-update", "down"])
def test_staple_is_dropped_10_minutes_after_this_update(start_mtlsd, make_upstream, pki,
                                                        responder, responder_down,
                                                        with_next_update):
    """A response without nextUpdate, 9 min 50 s old, is stapled, and served until its
    thisUpdate + 10 min (`expiry`) and not after.

    answering: the responder keeps answering with the same thisUpdate. The stapler asks again
    at expiry - 1 s (a response past half its time is asked for again just before it lapses,
    stapler.cpp), gets the same response, still current, and asks again just after expiry,
    when that answer is stale and refused; the handshake drops the staple once expiry has
    passed. Then the responder has a fresh answer: it is stapled within seconds (retried with
    backoff).
    answering-with-next-update: the same with a response whose nextUpdate is `expiry` (a peer's
    check would still take it 5 minutes past that, the clock skew allowed: a staple must not).
    down: the responder stops once the staple is served; those fetches fail and the staple
    lapses all the same."""
    this_update = int(time.time()) - MAX_AGE + LEAD
    expiry = this_update + MAX_AGE
    if with_next_update:
        r = responder(expiry - 60, expiry)
    else:
        r = responder(this_update)
    daemon = stapling_daemon(start_mtlsd, make_upstream, pki, r)
    # Seen stapled at least 3 s before it lapses, or this test shows nothing.
    out = wait_until(lambda: staple(daemon, pki), timeout=max(0.0, expiry - 3 - time.time()),
                     interval=0.1, what="the response stapled while it is current")
    assert "Cert Status: good" in out and ("Next Update:" in out) == with_next_update, out
    if responder_down:
        r.stop()
    # Handshakes until one is not stapled: (began, ended, stapled) each.
    seen: list[tuple[float, float, bool]] = []

    def lapsed() -> bool:
        began = time.time()
        stapled = staple(daemon, pki) is not None
        seen.append((began, time.time(), stapled))
        return not stapled
    wait_until(lapsed, timeout=expiry + 5 - time.time(), interval=0.1,
               what="the staple to lapse 10 minutes after its thisUpdate")
    dropped_at = seen[-1][1]
    # A handshake stapled at wall time t had time(nullptr) <= expiry, so t < expiry + 1 (0.1 s
    # spare: glibc's time() may lag a clock tick); one without a staple came no sooner than
    # expiry (down: the failed retry at expiry cleared it).
    late = [(b - expiry, e - expiry) for b, e, ok in seen if ok and b >= expiry + 1.1]
    assert not late, f"stapled after expiry (seconds after it): {late}"
    assert dropped_at >= expiry - 0.25, f"dropped {expiry - dropped_at:.2f}s before expiry"
    asked = r.requests()
    if responder_down:
        # And it stays gone: nothing newer comes from the responder.
        for _ in range(3):
            time.sleep(0.5)
            assert staple(daemon, pki) is None
        line = daemon.wait_for_log(fetch_refused)
        assert "no answer from the responder" in line["error"], line
    else:
        # Asked just before expiry, then at expiry, when the same answer is stale and refused.
        line = daemon.wait_for_log(fetch_refused)
        assert "response is stale" in line["error"], line
        asked = r.requests()
        assert expiry - 1.5 <= asked[1] < expiry + 1, [a - expiry for a in asked]
        assert asked[2] >= expiry - 0.25, [a - expiry for a in asked]
        # A fresh answer is stapled within the backoff's first steps, not five minutes on.
        mark = daemon.log_mark()
        r.this_update, r.next_update = int(time.time()), None
        fresh_from = time.time()
        out = wait_until(lambda: staple(daemon, pki), timeout=10, interval=0.1,
                         what="a fresh answer stapled again within seconds")
        assert "Cert Status: good" in out, out
        # The recovery is said, as the failures were.
        daemon.wait_for_log(lambda l: l.get("msg") == "stapling OCSP response", since=mark)
        print(f"stapled again {time.time() - fresh_from:.2f}s after the responder had it")
    print(f"last stapled handshake began {max(b for b, _, ok in seen if ok) - expiry:+.2f}s, "
          f"first unstapled ended {dropped_at - expiry:+.2f}s from expiry; "
          f"responder asked at {[round(a - expiry, 2) for a in asked]}")
