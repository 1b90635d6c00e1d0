// The phases between a handshake and the upstream: what the handshake negotiated or why it
// failed, who the peer is, revocation by network sources, the per-identity limit, and the
// inbound PROXY header that comes before all of it. Each refusal is recorded on the session;
// session_report.cpp turns it into the access line.
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mtlsd/log/log.hpp"
#include "mtlsd/proxy/proxy_header_read.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/tls/session_cache.hpp"
#include "mtlsd/tls/signing_probe.hpp"
#include "mtlsd/tls/ticket_chain.hpp"
#include "mtlsd/tls/verify.hpp"
#include "session_resumed.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

// Also after a failed handshake: once a cipher was chosen, the version and cipher are known
// (the access line of a refusal says what was negotiated).
void record_tls_details(session& s, SSL* ssl) {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
  // A TLS 1.2 handshake that failed after its ServerHello has chosen a cipher it never
  // switched to (review: such refusals were logged with no version and no cipher).
  if (!c) c = SSL_get_pending_cipher(ssl);
  if (!c) return;
  s.tls_version = SSL_get_version(ssl);
  s.cipher = SSL_CIPHER_get_name(c);
  s.resumed = SSL_session_reused(ssl) == 1;
}

// A handshake that failed: what was negotiated and the refused leaf, for the access line.
void record_failed_handshake(session& s, tls::verify_outcome& vo, SSL* ssl) {
  record_tls_details(s, ssl);
  if (vo.refused_peer)
    s.unverified_peer = std::make_unique<tls::peer_identity>(std::move(*vo.refused_peer));
  else if (vo.identity)  // verified, then the handshake failed (a TLS 1.2 remote refusing us)
    s.unverified_peer = std::make_unique<tls::peer_identity>(std::move(*vo.identity));
  trace_handshake_failed(s, vo.refusal.has_value());
}

// Why a handshake failed, in the rejection vocabulary.
void classify_handshake_failure(session& s, const tls::verify_outcome& vo, const tls_stream& tls,
                                const error_code& ec) {
  // Cancelled by the watchdog (deadline or kill): finish() names the reason from the phase.
  if (ec == asio::error::operation_aborted) return;
  if (vo.refusal) return s.refuse(*vo.refusal, vo.detail);
  // OpenSSL's "no shared cipher" would blame the client for our missing certificate.
  if (s.listener->cfg.tls.spiffe.enabled && !s.listener->svid)
    return s.refuse(reason::protocol_error, no_svid_yet_detail);
  // Our key failed to sign (a token removed, its object gone): no refusal of the peer, whose
  // doing it is not. The connection counts as an internal error, and the listener reads not
  // ready until the key signs again (runtime/signing_health.hpp). OpenSSL's own error only
  // (SSL_ERROR_SSL): a peer that resets while that message is written fails in the same state,
  // with a system error.
  if (ec == tls_protocol_error() && tls::failed_while_signing(tls.native())) {
    const std::string why = tls.failure_detail().empty() ? ec.message() : tls.failure_detail();
    s.detail = "internal error: our private key did not sign the handshake: " + why;
    if (s.listener->signing->failed(SSL_get_privatekey(tls.native()), why))
      log::error(
          "our private key did not sign a TLS handshake; the listener is not ready "
          "until it signs again",
          {{"listener", s.listener->cfg.name}, {"error", why}});
    return;
  }
  if (tls.failure_reason() == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
    return s.refuse(reason::no_client_cert, "client sent no certificate");
  if (auto r = tls::reason_from_ssl_failure(tls.failure_reason()))
    return s.refuse(*r, "TLS handshake failed: " + tls.failure_detail());
  if (ec == asio::error::eof)
    return s.refuse(reason::protocol_error, "connection closed during the TLS handshake");
  std::string why = tls.failure_detail().empty() ? ec.message() : tls.failure_detail();
  s.refuse(reason::protocol_error, "TLS handshake failed: " + why);
}

namespace {

// The peer's certificates as this connection saw them: the verified chain after a full
// handshake, only the leaf after a resumption (which skips verification).
std::vector<X509*> peer_chain(SSL* ssl, bool& verified) {
  std::vector<X509*> out;
  STACK_OF(X509)* chain = SSL_session_reused(ssl) ? nullptr : SSL_get0_verified_chain(ssl);
  verified = chain != nullptr;
  if (chain) {
    for (int i = 0; i < sk_X509_num(chain); ++i)
      out.push_back(sk_X509_value(chain, i));
  } else if (X509* leaf = SSL_get0_peer_certificate(ssl)) {
    out.push_back(leaf);
  }
  return out;
}

// A peer refused after its handshake, where no alert can say why any more: the client of an
// http: listener first gets a 403 naming the reason (for HTTP/2, then GOAWAY with
// INADEQUATE_SECURITY), which gRPC reports as PERMISSION_DENIED, then close_notify and a
// lingering close. The reason only, as an alert would say it; the detail (responder URLs,
// subjects) stays in mtlsd's log. The peer is named as a refused one from here on, its
// certificate in the peer_* fields and no `identity`, as after a refusal in the handshake
// (review: the access line carried the identity). In client mode the session is dropped from the
// cache, so it resumes nothing, and the remote gets close_notify alone: the local app's socket is
// reset as the session ends (session.cpp), not closed by lingering, whose FIN would read as a
// clean end.
asio::awaitable<void> refuse_after_handshake(session& s, tls_stream& tls, reason why,
                                             std::string detail) {
  s.refuse(why, std::move(detail));
  if (s.peer_identity) {
    s.unverified_peer = std::make_unique<tls::peer_identity>(std::move(*s.peer_identity));
    s.peer_identity.reset();
  }
  tls::client_session_cache::forget(tls.native());
  s.enter(phase::closing, std::chrono::seconds(1));
  co_await answer_refused(s, tls, {403, "Forbidden", NGHTTP2_INADEQUATE_SECURITY, to_string(why)});
  co_await tls.shutdown_send();
  if (s.listener->cfg.mode == config::listener_mode::server) co_await linger_close(s);
}

// After the handshake and before the upstream hears of the peer: the revocation answers that
// need the network (OCSP, distribution points), from the revocation service, for `chain` (see
// check_request::ends_at_anchor). The worker keeps serving other connections meanwhile. False
// when the peer must go no further (refused, or the session was ended meanwhile).
asio::awaitable<bool> check_revocation(session& s, tls_stream& tls, const tls::verify_outcome& vo,
                                       const std::vector<X509*>& chain, bool ends_at_anchor) {
  const auto& lr = *s.listener;
  tls::revocation::check_request req;
  req.pol = lr.revocation;
  req.ends_at_anchor = ends_at_anchor;
  for (X509* c : chain)
    req.chain.push_back(tls::up_ref(c));
  req.crl_file_unavailable = vo.crl_deferred_depths;
  req.crl_file_note = vo.crl_note;
  req.leaf_stapled_good = vo.staple == revocation_status::good;
  // Every lookup runs concurrently and is bounded by the timeout; this deadline is a backstop.
  s.enter(phase::revocation, 2 * lr.revocation.timeout + std::chrono::seconds(1));
  auto v = co_await tls::revocation::await_check(*lr.revocation_service, std::move(req));
  if (!v) co_return false;  // cancelled by the watchdog: finish() names the reason
  count_verdict(s, *v);
  // With recheck_established, a revocation learnt while the check ran (a CRL refreshed, another
  // listener's OCSP answer) refuses the peer the check admitted on what it had read before.
  auto revoked_meanwhile = s.control.revocation_checked(!v->refusal);
  if (v->refusal) {
    co_await refuse_after_handshake(s, tls, *v->refusal, v->detail);
    co_return false;
  }
  if (revoked_meanwhile) {
    co_await refuse_after_handshake(s, tls, reason::revoked, std::move(*revoked_meanwhile));
    co_return false;
  }
  if (!v->soft_fail_note.empty())
    log::warn("admitted without a revocation answer (revocation.on_unavailable: allow)",
              {{"conn_id", s.conn_id},
               {"listener", lr.cfg.name},
               {"client", s.client},
               {"detail", v->soft_fail_note}});
  co_return true;
}

}  // namespace

// After a completed handshake, in both modes: who the peer is, then revocation by network
// sources (OCSP, distribution points) and, with recheck, a watch that closes the session when
// a later answer revokes it. False: refused (the reason is recorded).
asio::awaitable<bool> judge_verified_peer(session& s, tls_stream& tls, tls::verify_outcome& vo,
                                          bool network_revocation, bool recheck) {
  const bool server = s.listener->cfg.mode == config::listener_mode::server;
  const config::ip_address* source = server && s.source ? &*s.source : nullptr;
  std::optional<resumed_chain> resumed;  // without a verified chain: rebuilt when first needed
  X509* const cert = SSL_get0_peer_certificate(tls.native());
  if (vo.identity) {
    s.peer_identity = std::move(vo.identity);
  } else if (cert && s.listener->cfg.server_auth.insecure_skip_verify) {
    // Nothing of the remote's was judged (review: a subject never verified was logged as the
    // identity): only the access line's peer_* fields name its certificate.
    s.unverified_peer = std::make_unique<tls::peer_identity>(tls::extract_identity(cert));
  } else if (cert) {
    // A resumed session skips verification (it was verified when first established, under the
    // same trust: the session id context digests it). Its certificate still names the peer.
    // But the allow list is not in that digest (a reload may have changed it), and rules may
    // depend on where the peer connects from and the name it asks for, which a ticket does not
    // pin: judge the allow list again, with this connection's address and SNI.
    s.peer_identity = tls::extract_identity(cert);
    std::optional<std::pair<reason, std::string>> refused;
    if (!tls::valid_now(cert)) {
      // Server tickets carrying such a certificate resume nothing (tls/ticket_chain.hpp); a
      // client-mode session is dropped from its cache first: this is the backstop.
      const bool early = X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0;
      refused.emplace(early ? reason::not_yet_valid : reason::expired,
                      early ? "certificate is not yet valid" : "certificate has expired");
    } else if (const auto& allow = s.listener->tls.peer_verifier->allow(); !allow.empty()) {
      if (auto d = tls::evaluate(allow, *s.peer_identity, {source, s.sni}); !d.allowed)
        refused.emplace(reason::not_authorized, std::move(d.detail));
    }
    resumed.emplace(*s.listener, tls.native(), cert);
    if (!refused && SSL_session_reused(tls.native()) == 1) {
      if (auto crls = unusable_crls_of_resumed(*s.listener, tls.native(), *resumed); crls.depths) {
        if (network_revocation) {
          // As a full handshake defers them: OCSP or a distribution point may answer for
          // those certificates, and check_revocation decides (and counts; its detail names
          // the CRL file as the source).
          vo.crl_deferred_depths = crls.depths;
          vo.crl_note = std::move(crls.note);
        } else {
          if (auto* m = s.listener->metrics)
            m->revocation_check(revocation_method::crl, revocation_status::unavailable);
          if (s.listener->revocation.soft_fail)  // as count_revocation says it for a full one
            warn_admitted_without_crl(s, crls.note + " (crl file) (resumed session)");
          else
            refused.emplace(reason::revocation_unavailable, crls.note + " (crl file)");
        }
      } else if (!network_revocation && s.listener->revocation.crl_files) {
        // The CRL files judged the session's full handshake and have not changed since (the
        // session id context is a digest of them), and are usable still: good, counted once
        // per connection as after a full handshake (review: resumptions counted none).
        if (auto* m = s.listener->metrics)
          m->revocation_check(revocation_method::crl, revocation_status::good);
      }
    }
    if (refused) {
      observe_handshake(s);
      co_await refuse_after_handshake(s, tls, refused->first,
                                      std::move(refused->second) + " (resumed session)");
      co_return false;
    }
  }
  trace_handshake_done(s);
  // The accepted connection's address in either mode: allowed_sources applies to both.
  auto rejudged =
      s.control.judged(tls.native(), s.source ? &*s.source : nullptr, &s.sni, s.listener.get());
  observe_handshake(s);
  if (rejudged) {
    // A reload came during the handshake and its policy refuses this peer: refused here,
    // before the upstream is connected to, as a reload's re-judging closes a connection.
    s.ended_by = termination::reload_rejudged;
    co_await refuse_after_handshake(s, tls, rejudged->first, std::move(rejudged->second));
    co_return false;
  }
  // Revocation needs the peer's chain; without it configured, nothing is allocated here.
  if (!network_revocation && !recheck) co_return true;
  bool chain_verified = false;
  const std::vector<X509*> chain = peer_chain(tls.native(), chain_verified);
  if (chain.empty()) co_return true;
  // A resumed session has only its leaf here: its chain is rebuilt up to the anchor, from the
  // trust bundle and the intermediates its ticket carries, as its full handshake verified it.
  if (!chain_verified && !resumed) resumed.emplace(*s.listener, tls.native(), chain.front());
  if (recheck) {
    // It watches that chain, as a full handshake watches the chain it verified, so that a
    // revocation of an intermediate (sent, or from the bundle) finds this session too; from
    // before its own check, so that one learnt while the check runs does as well.
    const std::vector<X509*> watched = chain_verified ? chain : resumed->get().with_anchor();
    s.control.watch_revocation(&s.listener->cfg.name, tls::revocation::peer_cert_ids(watched),
                               network_revocation);
  }
  if (!network_revocation) co_return true;
  bool ends_at_anchor = true;
  const std::vector<X509*> checked = chain_verified ? chain : resumed->to_check(ends_at_anchor);
  co_return co_await check_revocation(s, tls, vo, checked, ends_at_anchor);
}

// limits.max_connections_per_identity, once the handshake named the peer. The handshake is
// over, so no alert can say why: close_notify (after a 429 for the client of an http: listener,
// and GOAWAY with ENHANCE_YOUR_CALM for an HTTP/2 one), then close; the upstream hears nothing.
asio::awaitable<bool> admit_identity(session& s, tls_stream& tls) {
  // Checked here first: limit_key() copies the name, which a connection need not pay for when
  // nothing limits it.
  if (!s.peer_identity || s.listener->cfg.limits.max_connections_per_identity <= 0) co_return true;
  auto no = s.ticket.admit_identity(s.listener->cfg, s.peer_identity->limit_key());
  if (!no) co_return true;
  s.refuse(no->why, std::move(no->detail));
  s.enter(phase::closing, std::chrono::seconds(1));
  co_await answer_refused(s, tls,
                          {429, "Too Many Requests", NGHTTP2_ENHANCE_YOUR_CALM,
                           "too many connections for this identity"});
  co_await tls.shutdown_send();
  if (s.listener->cfg.mode == config::listener_mode::server) co_await linger_close(s);
  co_return false;
}

asio::awaitable<bool> admit_upstream_fds(session& s, tls_stream& tls) {
  const auto& cfg = s.listener->cfg;
  if (!cfg.http.enabled || !speaks_h2(cfg, tls.native())) co_return true;
  const std::int64_t extra = fds_per_connection(cfg) - fds_at_accept;
  if (extra <= 0) co_return true;
  if (connection_fds().take(extra)) {
    s.held_fds.n = extra;
    co_return true;
  }
  s.refuse(reason::over_capacity,
           "the file descriptor limit leaves no room for the upstream connections of another "
           "HTTP/2 client (" +
               std::to_string(extra) + " more descriptors)");
  s.enter(phase::closing, std::chrono::seconds(1));
  co_await answer_refused(s, tls, over_capacity_answer);  // it may try again elsewhere
  co_await tls.shutdown_send();
  co_await linger_close(s);
  co_return false;
}

// accept_proxy_protocol: the header first (bounded by timeouts.handshake), then the admission
// checks with the client it names. False: refused (recorded), or cancelled by the watchdog.
asio::awaitable<bool> accept_proxy_header(session& s) {
  const auto& cfg = s.listener->cfg;
  s.enter(phase::proxy_header, cfg.timeouts.handshake);
  auto [ec, h] = co_await read_proxy_header(s.peer);
  if (ec == asio::error::operation_aborted) co_return false;  // see finish()
  if (h.status != inbound_proxy_header::state::complete) {
    s.refuse(reason::protocol_error, h.error);
    co_return false;
  }
  const auto& accept = cfg.accept_proxy_protocol;
  if (!(h.version == 1 ? accept.v1 : accept.v2)) {
    s.refuse(reason::protocol_error, "a PROXY v" + std::to_string(h.version) +
                                         " header, but accept_proxy_protocol.versions does not "
                                         "list v" +
                                         std::to_string(h.version));
    co_return false;
  }
  auto source = s.source;
  if (h.has_addresses) {  // else (LOCAL, UNKNOWN) the balancer's own connection stands
    s.proxied = std::make_unique<session::proxied_addresses>(
        session::proxied_addresses{h.source, h.destination});
    source = ip_of(reinterpret_cast<const sockaddr*>(&h.source));
    s.source = source;  // what allow rules (source_cidrs) and re-judging see
    s.client = format_endpoint(stream_endpoint(&h.source, sizeof h.source));
  }
  if (auto no = s.ticket.admit_source(cfg, source)) {
    s.refuse(no->why, std::move(no->detail));
    co_return false;
  }
  co_return true;
}

}  // namespace mtlsd::proxy::detail
