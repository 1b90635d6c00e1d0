#include "mtlsd/proxy/session.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <stdexcept>
#include <utility>

#include "mtlsd/log/log.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/proxy/xfcc.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/tls/signing_probe.hpp"
#include "mtlsd/tls/verify.hpp"
#include "mtlsd/util/exception.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;
using detail::connect_end;
using detail::drain_handshake_grace;
using detail::outcome;
using detail::phase;
using detail::session;
using detail::start_watchdog;
using detail::steady;
using detail::stop_watchdog;

// mode: server, up to the relay: the handshake, the judging, the upstream's connection (and its
// PROXY header). True: the peer is admitted and the upstream connected. A coroutine of its own
// so that what only these steps need — the verify outcome (~0.9 KiB) and their awaiters, 1.4
// KiB in all — is freed before the relay, not held by every connection for its whole life. The
// SSL forgets the verify outcome as the frame goes (tls::verifier::bind): nothing of the
// server's reads it after the handshake. Long (~70 lines) on purpose: the phases read in the
// order a connection meets them, each step already a call of its own.
asio::awaitable<bool> establish_server_mode(session& s) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  // After a PROXY header the handshake gets what is left of timeouts.handshake: the two together
  // are bounded by it from accept, or a sender could hold a socket for twice as long.
  if (s.current == phase::proxy_header)
    s.current = phase::handshake;
  else
    s.enter(phase::handshake, cfg.timeouts.handshake);
  // No SSL object until the ClientHello is in: a silent connection costs only its frames.
  if (co_await wait_for_first_record(s.peer) == asio::error::operation_aborted) co_return false;
  tls_stream& tls = s.tls.emplace(s.peer, lr.tls.ctx.get(), true);
  tls::verify_outcome vo;
  vo.conn_id = s.conn_id;
  if (s.source) vo.source = &*s.source;
  tls::verifier::bind(tls.native(), &vo);
  struct unbind {
    SSL* ssl;
    ~unbind() { tls::verifier::bind(ssl, nullptr); }
  } forget_outcome{tls.native()};
  // With OCSP / distribution points, revocation is decided after the handshake (and counted
  // then); otherwise the handshake decided it.
  const bool network_revocation = lr.revocation_service && lr.revocation.network();

  auto handshake_error = co_await tls.handshake();
  // As the ClientHello callback read it (tls::record_client_sni); nothing reads vo.sni after
  // the handshake (no renegotiation, no post-handshake authentication).
  s.sni = std::move(vo.sni);
  s.ticket.end_handshake();
  s.control.on_drain({});  // set in serve(): from here a drain waits as for any connection
  if (handshake_error || !network_revocation) count_revocation(s, vo);
  if (handshake_error) {
    // Aborted: cancelled by the watchdog, finish() names the reason.
    if (handshake_error != asio::error::operation_aborted)
      classify_handshake_failure(s, vo, tls, handshake_error);
    record_failed_handshake(s, vo, tls.native());
    if (handshake_error == asio::error::operation_aborted) co_return false;
    co_await linger_close(s);
    co_return false;
  }
  record_tls_details(s, tls.native());
  // A full handshake here signed with our key (CertificateVerify, or TLS 1.2's key exchange).
  if (!s.resumed && lr.signing->failing() && tls::signed_as_probed(tls.native()) &&
      lr.signing->signed_ok(SSL_get_privatekey(tls.native())))
    log::info("our private key signs again", {{"listener", lr.cfg.name}});
  const bool recheck = lr.revocation.recheck_established && lr.revocation.enabled();
  const bool judged = co_await judge_verified_peer(s, tls, vo, network_revocation, recheck);
  trace_judged(s, judged);
  if (!judged) co_return false;
  if (!co_await admit_identity(s, tls)) co_return false;
  if (!co_await admit_upstream_fds(s, tls)) co_return false;

  // Nothing reaches the upstream before this point: the peer is verified and authorized.
  const connect_end connected = co_await connect_phase(s);
  if (connected == connect_end::refused) {
    s.enter(phase::closing, std::chrono::seconds(1));
    const bool answered = co_await answer_connect_refused(s, tls);
    co_await tls.shutdown_send();
    // The client may still be sending its request body: as after any HTTP answer it did not
    // wait for, not just the second a refusal's alert gets. Out of descriptors (503), the
    // socket is not held longer than that second (an HTTP/1.1 request is not waited for then;
    // an HTTP/2 client's SETTINGS and requests are, up to a second more).
    if (answered && s.refusal == reason::over_capacity)
      co_await linger_close(s);
    else if (answered)
      co_await close_lingering(s);
  }
  if (connected != connect_end::connected) co_return false;
  if (cfg.proxy_protocol == config::proxy_protocol_mode::v2) {
    const bool sent = co_await send_proxy_header(s, tls.native());
    if (!sent) co_return false;
  }
  co_return true;
}

// mode: server — TLS from the peer, plaintext to the upstream.
asio::awaitable<void> serve_server_mode(session& s) {
  const bool established = co_await establish_server_mode(s);
  if (!established) co_return;
  const auto& cfg = s.listener->cfg;
  s.admitted = true;
  if (s.listener->metrics) s.listener->metrics->accepted->Increment();

  s.enter_relay(cfg.timeouts.idle, cfg.timeouts.half_close, cfg.timeouts.max_connection_age);
  trace_relay_start(s);
  if (cfg.http.enabled) {
    co_await serve_http(s, *s.tls);
  } else {
    co_await relay(*s.tls, s.peer, s.upstream, s.clock, s.relayed);
    if (s.relayed.tls_peer_sending) co_await close_lingering(s);
  }
}

// mode: client — plaintext from the local app, TLS to the remote.
asio::awaitable<void> serve_client_mode(session& s) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  // Before the first X.509-SVID the context holds no certificate: a remote that does not insist
  // on one would take the app's bytes as from nobody (review: relayed, remote with optional
  // client auth). Nothing is sent until mtlsd can present its identity.
  if (cfg.tls.spiffe.enabled && !lr.svid) {
    s.refuse(reason::upstream_unavailable, detail::no_svid_yet_detail);
    co_return;
  }
  if (co_await connect_phase(s) != connect_end::connected) co_return;
  tls_stream& tls = s.tls.emplace(s.upstream, lr.tls.ctx.get(), false);
  tls::verify_outcome vo;
  vo.conn_id = s.conn_id;
  // insecure_skip_verify: the remote's certificate is not judged at all. OpenSSL still runs its
  // chain check (and with it the verify callback) and then ignores the result: without an
  // outcome bound, the callback records nothing, so no verdict, identity or revocation answer
  // of that check reaches the access line or the metrics.
  if (!cfg.server_auth.insecure_skip_verify) tls::verifier::bind(tls.native(), &vo);
  // Resumption is per upstream address: a hostname may resolve to servers that do not share
  // ticket keys. Sessions arriving later on this connection (TLS 1.3 tickets) land there too.
  if (lr.tls.sessions) {
    s.upstream_key = s.upstream_address;  // as connected (connect_phase)
    lr.tls.sessions->prepare(tls.native(), &s.upstream_key);
  }
  // SNI for host names only: an IP literal is not a valid SNI name (the IP SAN check applies).
  // SSL_ctrl directly: the SSL_set_tlsext_host_name macro hides an old-style cast.
  if (!lr.tls.server_name.empty() && !tls::is_ip_literal(lr.tls.server_name)) {
    SSL_ctrl(tls.native(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(lr.tls.server_name.c_str()));
    s.sni = lr.tls.server_name;
  }

  // The remote's chain gets the same revocation checks as a client's in mode: server (CRL files
  // in the handshake, OCSP / distribution points after it, recheck of live connections); none
  // with insecure_skip_verify.
  const bool network_revocation =
      lr.revocation_service && lr.revocation.network() && !cfg.server_auth.insecure_skip_verify;

  s.enter(phase::handshake, cfg.timeouts.handshake);
  trace_client_hello_sent(s, tls.native());
  auto handshake_error = co_await tls.handshake();
  s.ticket.end_handshake();
  // CRL files and a stapled OCSP response, when the remote sent one (with OCSP / distribution
  // points the revocation service's verdict is counted instead, as in mode: server).
  if (handshake_error || !network_revocation) count_revocation(s, vo);
  if (handshake_error) {
    classify_handshake_failure(s, vo, tls, handshake_error);
    record_failed_handshake(s, vo, tls.native());
    // A stapled "revoked" refused the remote: the revocation service keeps it for every later
    // OCSP check of that certificate and closes other connections to it (recheck_established),
    // as a responder's "revoked" does.
    if (vo.staple == revocation_status::revoked && lr.revocation_service) {
      auto staple = tls::revocation::stapled_by_remote(tls.native());
      lr.revocation_service->learn_stapled_revocation(std::move(staple.leaf),
                                                      std::move(staple.issuer),
                                                      std::move(staple.response), lr.revocation);
    }
    co_return;
  }
  record_tls_details(s, tls.native());
  const bool recheck = lr.revocation.recheck_established && lr.revocation.enabled() &&
                       !cfg.server_auth.insecure_skip_verify;
  // Nothing of the app's goes to a remote whose certificate is revoked.
  const bool judged = co_await judge_verified_peer(s, tls, vo, network_revocation, recheck);
  trace_judged(s, judged);
  if (!judged) co_return;
  if (!co_await admit_identity(s, tls)) co_return;
  s.admitted = true;
  if (lr.metrics) lr.metrics->accepted->Increment();

  s.enter_relay(cfg.timeouts.idle, cfg.timeouts.half_close, cfg.timeouts.max_connection_age);
  trace_relay_start(s);
  co_await relay(tls, s.upstream, s.peer, s.clock, s.relayed);
  // Ended for its age (relay_state::age), the local app may still be sending: closed over its
  // unread bytes, the socket would reset and lose what was still queued for it.
  if (s.aged) co_await close_lingering(s);
}

asio::awaitable<void> serve(session& s) {
  const bool server_mode = s.listener->cfg.mode == config::listener_mode::server;
  // Shutdown began before the TLS handshake finished (mode: server; serve_server_mode() clears
  // this once it has). Nothing of the client's has reached the upstream, so such a connection
  // does not hold the drain until its handshake timeout. Before its ClientHello is in, the
  // client has sent nothing that matters: closed now, and it can retry elsewhere at once, as
  // nginx closes connections that have not sent a request. Once the handshake runs, the client
  // may be sending its Finished with its first request in the same flight, which a close would
  // lose: it gets a short grace to finish instead. In mode: client the local app may already
  // have written its request, so there the handshake goes on as before.
  if (server_mode)
    s.control.on_drain([&s] {
      if (!s.tls) {
        s.control.kill(termination::drain, reason::shutting_down,
                       "shutdown began before the client's ClientHello");
        return;
      }
      s.handshake_cut_by_drain = true;
      const auto grace = steady::now() + drain_handshake_grace;
      if (grace < s.clock.deadline) {
        s.clock.deadline = grace;
        s.watchdog_timer.cancel();  // looks again, at the new deadline
      }
    });
  // Not `a && !co_await b`: GCC 12 miscompiles a co_await inside a short-circuit operand.
  if (s.listener->cfg.accept_proxy_protocol.enabled) {
    const bool go_on = co_await accept_proxy_header(s);
    if (!go_on) co_return;
  }
  if (server_mode)
    co_await serve_server_mode(s);
  else
    co_await serve_client_mode(s);
}

}  // namespace

namespace {

// An exception that ended a session: an internal error.
outcome failure(const std::exception_ptr& e) {
  return outcome{outcome::kind::failed, util::message_of(e)};
}

// What mtlsd cut by ending a byte relay (layer 4, or an HTTP/1.1 connection upgraded to one)
// itself — a deadline, the drain timeout, a revocation, a reload's verdict, an internal error —
// with no other boundary to end it at: each direction whose end had not been passed on
// (relay_result::tls_stream_ended, plain_stream_ended).
struct cut_directions {
  bool to_plain = false;  // the TLS peer's stream, to the plain side
  bool to_tls = false;    // the plain peer's stream, to the TLS peer
};
cut_directions cut_by_mtlsd(const session& s, const outcome& o) {
  const bool byte_relay = !s.listener->cfg.http.enabled || s.relayed.tunnel;
  if (!byte_relay || !s.admitted || o.how == outcome::kind::completed) return {};
  return {!s.relayed.tls_stream_ended, !s.relayed.plain_stream_ended};
}

// The plain side (the upstream; in mode: client the local app) of a stream cut on its way there
// is reset as it closes, as after the TLS peer's reset (relay.cpp): a FIN would read as the
// stream's end (review: an upload cut by the drain timeout or a reload reached the upstream as a
// clean EOF). Not when only the other direction was cut: a FIN already followed the last byte,
// and a reset would throw away what the kernel still holds of the stream (the last 3 MB of a
// whole 12 MiB upload, cut at timeouts.half_close while the upstream read it slowly); should it
// write more, the plain peer meets a reset from the closed socket anyway.
void reset_plain_side(session& s) {
  auto& plain = s.listener->cfg.mode == config::listener_mode::server ? s.upstream : s.peer;
  if (!plain.is_open()) return;  // closed already, by a lingering close
  const linger reset{1, 0};
  ::setsockopt(plain.native_handle(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
}

// A session killed for a reason the peer should hear of (revoked) gets close_notify, bounded.
asio::awaitable<void> close_notify(session& s) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(s.peer.get_executor(), std::chrono::seconds(1));
  co_await (s.tls->shutdown_send() || deadline.async_wait(as_tuple(use_awaitable)));
}

// The connection's life once its session exists: the serving side runs in this coroutine
// itself, the watchdog beside it as a timer callback (session_watchdog.cpp) that cancels it
// through the caller's signal. The first to finish decides the outcome, as the parallel group
// that used to join them did: the watchdog's verdict, or else how the serving side ended (an
// exception from it: an internal error).
asio::awaitable<void> run(std::unique_ptr<session> owned, session_registry& registry) {
  session& s = *owned;
  // A watchdog completion still to run reads the session: should this coroutine end by an
  // exception between start_watchdog and stop_watchdog, with one pending, the session is left to
  // that completion, which deletes it. Not when the frame is destroyed unfinished (the worker's
  // io_context going away): the pending completion is then destroyed without running, and the
  // session goes with the frame.
  struct keep_for_watchdog {
    std::unique_ptr<session>& owned;
    ~keep_for_watchdog() {
      if (owned->watchdog_waits == 0 || std::uncaught_exceptions() == 0) return;
      owned->serving_over = owned->orphaned = true;
      owned->watchdog_timer.cancel();
      (void)owned.release();
    }
  } keep{owned};
  // Without its spawner's slot, the watchdog's verdicts would reach nothing (session.hpp).
  if (!(co_await asio::this_coro::cancellation_state).slot().is_connected())
    throw std::logic_error("run_session was not spawned with its stop_serving signal's slot");
  trace_accepted(s);
  s.control.attach(&s.watchdog_timer);
  registry.add(&s.control);
  struct unregister {
    session_registry& r;
    session_control* c;
    ~unregister() { r.remove(c); }
  } guard{registry, &s.control};

  error_code mode_ec;
  net::make_non_blocking(s.peer, mode_ec);  // before any wait: see make_non_blocking
  if (mode_ec) throw boost::system::system_error(mode_ec, "making the client socket non-blocking");
  start_watchdog(s);
  std::exception_ptr serve_error;
  try {
    co_await serve(s);
  } catch (...) {
    serve_error = std::current_exception();
  }
  // Whatever the watchdog cancelled is over: what follows must not be cut short by it.
  co_await asio::this_coro::reset_cancellation_state();
  co_await stop_watchdog(s);
  outcome o = s.watchdog_verdict ? std::move(*s.watchdog_verdict)
              : serve_error      ? failure(serve_error)
                                 : outcome{};
  // A stream cut on its way to the TLS peer ends without close_notify, which would tell it that
  // nothing was cut, as a response cut in HTTP mode does (README: Choices made where the
  // contract is silent).
  const cut_directions cut = cut_by_mtlsd(s, o);
  // Mode client, not admitted (the remote refused in the handshake or after it, or never
  // reached): the local app got nothing, and a FIN would read as a clean, empty answer. It is
  // reset, whether or not its request was in yet (review: a FIN or a reset depended on that).
  const bool server_mode = s.listener->cfg.mode == config::listener_mode::server;
  if (cut.to_plain || (!server_mode && !s.admitted)) reset_plain_side(s);
  if (o.how == outcome::kind::killed && s.control.kill_reason() && s.tls && s.admitted &&
      !cut.to_tls) {
    try {
      co_await close_notify(s);
    } catch (const std::exception&) {
      o = failure(std::current_exception());
    }
  }
  finish(s, o);
}

}  // namespace

// Not a coroutine: the session is built here, on the heap, so that the coroutine's frame does
// not keep a second copy of these parameters for the connection's life (GCC copies every
// by-value parameter of a coroutine into its frame; 0.4 KiB here).
asio::awaitable<void> run_session(stream_socket peer,
                                  std::shared_ptr<const runtime::listener_runtime> listener,
                                  session_registry& registry,
                                  asio::cancellation_signal& stop_serving, admission_ticket ticket,
                                  std::optional<stream_endpoint> remote) {
  auto s = std::make_unique<session>(std::move(peer), std::move(listener));
  s->stop_serving = &stop_serving;
  s->ticket = std::move(ticket);
  error_code peer_ec;
  if (remote)
    s->remote = *remote;
  else
    s->remote = s->peer.remote_endpoint(peer_ec);
  if (!peer_ec) {
    s->client = format_endpoint(s->remote);
    s->source = ip_of(s->remote.data());
    set_nodelay(s->peer, s->remote);
  }
  return run(std::move(s), registry);
}

}  // namespace mtlsd::proxy
