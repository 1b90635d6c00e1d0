#include "mtlsd/proxy/session.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <optional>

#include "mtlsd/config/duration.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "mtlsd/proxy/proxy_header_read.hpp"
#include "mtlsd/proxy/proxy_protocol.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/proxy/upstream.hpp"
#include "mtlsd/proxy/xfcc.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/tls/verify.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;
using detail::outcome;
using detail::phase;
using detail::session;
using detail::steady;

// Ends when the current phase's deadline passes or when the session is killed, and says which.
// enter() and kill() cancel its timer to make it look again (a new phase may have a shorter
// deadline); the serving side finishing first cancels it for good.
// timeouts.max_connection_age passed: a graceful close. Shutting down our receiving side of
// both sockets makes each pump read EOF once what already arrived is relayed, so each passes
// the end on as at any EOF (close_notify + FIN to the client, FIN to the upstream) — with no
// write cut in the middle — and timeouts.half_close bounds what is still in flight.
void close_for_age(session& s) {
  s.aged = true;
  s.age_limit = steady::time_point::max();
  ::shutdown(s.peer.native_handle(), SHUT_RD);
  if (s.upstream.is_open()) ::shutdown(s.upstream.native_handle(), SHUT_RD);
  s.clock.start_half_close();
}

asio::awaitable<outcome> watchdog(session& s) {
  for (;;) {
    if (s.control.killed()) co_return outcome{outcome::kind::killed, {}};
    const auto now = steady::now();
    if (now >= s.age_limit) {
      close_for_age(s);
      continue;
    }
    if (now >= s.clock.deadline) co_return outcome{outcome::kind::deadline, {}};
    s.watchdog_timer.expires_at(std::min(s.clock.deadline, s.age_limit));
    co_await s.watchdog_timer.async_wait(as_tuple(use_awaitable));  // aborted: look again
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) co_return outcome{};
  }
}

// Also after a failed handshake: once a cipher was chosen, the version and cipher are known
// (the access line of a refusal says what was negotiated).
void record_tls_details(session& s, SSL* ssl) {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
  if (!c) return;
  s.tls_version = SSL_get_version(ssl);
  s.cipher = SSL_CIPHER_get_name(c);
  s.resumed = SSL_session_reused(ssl) == 1;
}

// connect_upstream, recording the access line's upstream and upstream_connect_ms.
asio::awaitable<error_code> connect_and_record(session& s, std::string& why) {
  const auto begin = steady::now();
  steady::time_point resolved{};
  auto ec = co_await connect_upstream(s.upstream, s.listener->cfg.upstream, why, &resolved);
  s.upstream_connect_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - begin).count();
  if (!ec) s.upstream_address = remote_address(s.upstream);
  trace_connect(s, begin, resolved, ec, why);
  co_return ec;
}

// A handshake that failed: what was negotiated and the refused leaf, for the access line.
void record_failed_handshake(session& s, tls::verify_outcome& vo, SSL* ssl) {
  record_tls_details(s, ssl);
  if (vo.refused_peer) s.refused_peer = std::move(vo.refused_peer);
  trace_handshake_failed(s, vo.refusal.has_value());
}

// Why a handshake failed, in the rejection vocabulary.
void classify_handshake_failure(session& s, const tls::verify_outcome& vo, const tls_stream& tls,
                                const error_code& ec) {
  // Cancelled by the watchdog (deadline or kill): finish() names the reason from the phase.
  if (ec == asio::error::operation_aborted) return;
  if (vo.refusal) return s.refuse(*vo.refusal, vo.detail);
  if (tls.failure_reason() == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
    return s.refuse(reason::no_client_cert, "client sent no certificate");
  if (auto r = tls::reason_from_ssl_failure(tls.failure_reason()))
    return s.refuse(*r, "TLS handshake failed: " + tls.failure_detail());
  if (ec == asio::error::eof)
    return s.refuse(reason::protocol_error, "connection closed during the TLS handshake");
  std::string why = tls.failure_detail().empty() ? ec.message() : tls.failure_detail();
  s.refuse(reason::protocol_error, "TLS handshake failed: " + why);
}

// After a refusal the alert is already written; closing now, with the client's unread bytes in
// our receive queue, would make the kernel send RST — and a RST can destroy the alert before the
// client reads it (curl then reports a reset instead of "certificate required"). So: FIN, then
// read and discard until the client closes, bounded by a short deadline (nginx's lingering close).
asio::awaitable<void> linger_close(session& s) {
  s.enter(phase::closing, std::chrono::seconds(1));
  error_code ec;
  s.peer.shutdown(stream_socket::shutdown_send, ec);
  if (ec) co_return;
  std::array<char, 1024> sink;
  for (;;) {
    auto [rec, n] = co_await s.peer.async_read_some(asio::buffer(sink), as_tuple(use_awaitable));
    if (rec) co_return;
  }
}

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

// After the handshake and before the upstream hears of the peer: the revocation answers that
// need the network (OCSP, distribution points), from the revocation service. The worker keeps
// serving other connections meanwhile. False when the peer must go no further (refused, or the
// session was ended meanwhile).
asio::awaitable<bool> check_revocation(session& s, tls_stream& tls, const tls::verify_outcome& vo,
                                       const std::vector<X509*>& chain, bool verified) {
  const auto& lr = *s.listener;
  tls::revocation::check_request req;
  req.pol = lr.revocation;
  req.chain_verified = verified;
  for (X509* c : chain)
    req.chain.push_back(tls::up_ref(c));
  req.crl_file_unavailable = vo.crl_deferred_depths;
  req.crl_file_note = vo.crl_note;
  req.leaf_stapled_good = vo.staple == tls::revocation::status::good;
  // Every lookup runs concurrently and is bounded by the timeout; this deadline is a backstop.
  s.enter(phase::revocation, 2 * lr.revocation.timeout + std::chrono::seconds(1));
  auto v = co_await tls::revocation::await_check(*lr.revocation_service, std::move(req));
  if (!v) co_return false;  // cancelled by the watchdog: finish() names the reason
  count_verdict(s, *v);
  if (v->refusal) {
    s.refuse(*v->refusal, v->detail);
    // The handshake is over, so no alert can say why: close_notify, then a lingering close.
    s.enter(phase::closing, std::chrono::seconds(1));
    co_await tls.shutdown_send();
    co_await linger_close(s);
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

sockaddr_storage sockaddr_of(const stream_endpoint& ep) {
  sockaddr_storage out{};
  std::memcpy(&out, ep.data(), std::min<std::size_t>(ep.size(), sizeof out));
  return out;
}

// Everything the PROXY v2 header tells the upstream about this connection.
proxy_v2_info proxy_info(const session& s, SSL* ssl) {
  proxy_v2_info info;
  error_code ec;
  info.source = s.proxied ? s.proxied_source : sockaddr_of(s.remote);
  info.destination = s.proxied ? s.proxied_destination : sockaddr_of(s.peer.local_endpoint(ec));
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn) info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.authority = sni;
  info.tls_version = s.tls_version;
  info.cipher = s.cipher;
  info.resumed = s.resumed;
  if (X509* cert = SSL_get0_peer_certificate(ssl)) {
    info.client_cert = true;
    info.verified = SSL_get_verify_result(ssl) == X509_V_OK;
    info.signature_algorithm = OBJ_nid2sn(X509_get_signature_nid(cert));
    if (EVP_PKEY* key = X509_get0_pubkey(cert)) {
      // HAProxy's spelling: "RSA2048", "EC256", "ED25519".
      const int id = EVP_PKEY_get_base_id(key);
      if (id == EVP_PKEY_RSA)
        info.key_algorithm = "RSA" + std::to_string(EVP_PKEY_get_bits(key));
      else if (id == EVP_PKEY_EC)
        info.key_algorithm = "EC" + std::to_string(EVP_PKEY_get_bits(key));
      else
        info.key_algorithm = OBJ_nid2sn(id);
    }
    unsigned char* der = nullptr;
    int len = i2d_X509(cert, &der);
    if (len > 0)
      info.cert_der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
  }
  if (s.peer_identity) {
    info.common_name = s.peer_identity->common_name;
    info.spiffe_id = s.peer_identity->spiffe_id;
    info.uri_sans = s.peer_identity->uri_sans;
    info.dns_sans = s.peer_identity->dns_sans;
    info.cert_sha256 = s.peer_identity->sha256;
  }
  return info;
}

// The upstream connect failed. Running out of file descriptors is our capacity, not the
// upstream's fault: refused as over_capacity and not counted as an upstream failure.
// After a completed handshake, in both modes: who the peer is, then revocation by network
// sources (OCSP, distribution points) and, with recheck, a watch that closes the session when
// a later answer revokes it. False: refused (the reason is recorded).
asio::awaitable<bool> judge_verified_peer(session& s, tls_stream& tls, tls::verify_outcome& vo,
                                          bool network_revocation, bool recheck) {
  const bool server = s.listener->cfg.mode == config::listener_mode::server;
  const config::ip_address* source = server && s.source ? &*s.source : nullptr;
  if (vo.identity) {
    s.peer_identity = std::move(vo.identity);
  } else if (X509* cert = SSL_get0_peer_certificate(tls.native())) {
    // A resumed session skips verification (it was verified when first established, under this
    // same context); its certificate still names the peer. But allow rules may also depend on
    // where it connects from and the name it asks for, which a ticket does not pin: judge the
    // allow list again, with this connection's address and SNI.
    s.peer_identity = tls::extract_identity(cert);
    if (const auto& allow = s.listener->tls.peer_verifier->allow(); !allow.rules.empty()) {
      const char* sni = SSL_get_servername(tls.native(), TLSEXT_NAMETYPE_host_name);
      auto d = tls::evaluate(allow, *s.peer_identity, {source, sni ? sni : ""});
      if (!d.allowed) {
        observe_handshake(s);
        // Refused: the log names it as the refused peer, not as a verified identity.
        s.refused_peer = std::move(s.peer_identity);
        s.peer_identity.reset();
        s.refuse(reason::not_authorized, std::move(d.detail) + " (resumed session)");
        s.enter(phase::closing, std::chrono::seconds(1));
        co_await tls.shutdown_send();
        co_await linger_close(s);
        co_return false;
      }
    }
  }
  trace_handshake_done(s);
  s.control.judged(tls.native(), source, s.listener.get());
  observe_handshake(s);
  // Revocation needs the peer's chain; without it configured, nothing is allocated here.
  if (!network_revocation && !recheck) co_return true;
  bool chain_verified = false;
  const std::vector<X509*> chain = peer_chain(tls.native(), chain_verified);
  if (chain.empty()) co_return true;
  if (network_revocation && !co_await check_revocation(s, tls, vo, chain, chain_verified))
    co_return false;
  if (recheck)
    s.control.watch_revocation(&s.listener->cfg.name, tls::revocation::peer_cert_ids(chain));
  co_return true;
}

// limits.max_connections_per_identity, once the handshake named the peer. The handshake is
// over, so no alert can say why: close_notify, then close; the upstream hears nothing.
asio::awaitable<bool> admit_identity(session& s, tls_stream& tls) {
  if (!s.peer_identity) co_return true;
  auto no = s.ticket.admit_identity(s.listener->cfg, s.peer_identity->display());
  if (!no) co_return true;
  s.refuse(no->why, std::move(no->detail));
  s.enter(phase::closing, std::chrono::seconds(1));
  co_await tls.shutdown_send();
  if (s.listener->cfg.mode == config::listener_mode::server) co_await linger_close(s);
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
    s.proxied = true;
    s.proxied_source = h.source;
    s.proxied_destination = h.destination;
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

void refuse_connect(session& s, const error_code& ec, const std::string& why) {
  if (out_of_descriptors(ec))
    return s.refuse(reason::over_capacity, "out of file descriptors: " + why);
  if (s.listener->metrics) s.listener->metrics->upstream_connect_failures->Increment();
  s.refuse(reason::upstream_unavailable, why);
}

// mode: server — TLS from the peer, plaintext to the upstream.
asio::awaitable<void> serve_server(session& s) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  s.enter(phase::handshake, cfg.timeouts.handshake);
  // No SSL object until the ClientHello is in: a silent connection costs only its frames.
  if (co_await wait_for_first_record(s.peer) == asio::error::operation_aborted) co_return;
  tls_stream& tls = s.tls.emplace(s.peer, lr.tls.ctx.get(), true);
  tls::verify_outcome vo;
  vo.conn_id = s.conn_id;
  if (s.source) vo.source = &*s.source;
  tls::verifier::bind(tls.native(), &vo);
  // With OCSP / distribution points, revocation is decided after the handshake (and counted
  // then); otherwise the handshake decided it.
  const bool network_revocation = lr.revocation_service && lr.revocation.network();

  auto handshake_error = co_await tls.handshake();
  s.ticket.end_handshake();
  if (handshake_error || !network_revocation) count_revocation(s, vo);
  if (handshake_error) {
    // Aborted: cancelled by the watchdog, finish() names the reason.
    if (handshake_error != asio::error::operation_aborted)
      classify_handshake_failure(s, vo, tls, handshake_error);
    record_failed_handshake(s, vo, tls.native());
    if (handshake_error == asio::error::operation_aborted) co_return;
    co_await linger_close(s);
    co_return;
  }
  record_tls_details(s, tls.native());
  const bool recheck = lr.revocation.recheck_established && lr.revocation.enabled();
  const bool judged = co_await judge_verified_peer(s, tls, vo, network_revocation, recheck);
  trace_judged(s, judged);
  if (!judged) co_return;
  if (!co_await admit_identity(s, tls)) co_return;

  // Nothing reaches the upstream before this point: the peer is verified and authorized.
  s.enter(phase::connect, cfg.timeouts.connect);
  std::string why;
  if (auto ec = co_await connect_and_record(s, why)) {
    if (ec == asio::error::operation_aborted) {  // the watchdog's verdict: see finish()
      s.connect_step = std::move(why);
      co_return;
    }
    refuse_connect(s, ec, why);
    s.enter(phase::closing, std::chrono::seconds(1));
    co_await tls.shutdown_send();
    co_return;
  }
  if (cfg.proxy_protocol == config::proxy_protocol_mode::v2) {
    const std::string header = build_proxy_v2_header(proxy_info(s, tls.native()));
    auto [wec, n] =
        co_await asio::async_write(s.upstream, asio::buffer(header), as_tuple(use_awaitable));
    if (wec) {
      // The upstream took the connection and then failed: counted against it, as a failed
      // connect is (refuse_connect).
      if (s.listener->metrics) s.listener->metrics->upstream_connect_failures->Increment();
      s.refuse(reason::upstream_unavailable, "writing the PROXY header: " + wec.message());
      co_return;
    }
  }
  s.admitted = true;
  if (s.listener->metrics) s.listener->metrics->accepted->Increment();

  s.enter_relay(cfg.timeouts.idle, cfg.timeouts.half_close, cfg.timeouts.max_connection_age);
  trace_relay_start(s);
  if (cfg.http.enabled) {
    const xfcc_policy xfcc =
        make_xfcc_policy(cfg.http, tls.native(), s.peer_identity ? &*s.peer_identity : nullptr,
                         s.listener->tls.own_uri_sans);
    co_await http_relay(tls, s.peer, s.upstream, xfcc, s.clock, s.relayed);
  } else {
    co_await relay(tls, s.peer, s.upstream, s.clock, s.relayed);
  }
}

// mode: client — plaintext from the local app, TLS to the remote.
asio::awaitable<void> serve_client(session& s) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  s.enter(phase::connect, cfg.timeouts.connect);
  std::string why;
  if (auto ec = co_await connect_and_record(s, why)) {
    if (ec == asio::error::operation_aborted) {  // the watchdog's verdict: see finish()
      s.connect_step = std::move(why);
      co_return;
    }
    refuse_connect(s, ec, why);
    co_return;
  }
  tls_stream& tls = s.tls.emplace(s.upstream, lr.tls.ctx.get(), false);
  tls::verify_outcome vo;
  vo.conn_id = s.conn_id;
  tls::verifier::bind(tls.native(), &vo);
  // Resumption is per upstream address: a hostname may resolve to servers that do not share
  // ticket keys. Sessions arriving later on this connection (TLS 1.3 tickets) land there too.
  if (lr.tls.sessions) {
    s.upstream_key = s.upstream_address;  // as connected (connect_and_record)
    lr.tls.sessions->prepare(tls.native(), &s.upstream_key);
  }
  // SNI for host names only: an IP literal is not a valid SNI name (the IP SAN check applies).
  // SSL_ctrl directly: the SSL_set_tlsext_host_name macro hides an old-style cast.
  if (!lr.tls.server_name.empty() && !tls::is_ip_literal(lr.tls.server_name))
    SSL_ctrl(tls.native(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(lr.tls.server_name.c_str()));

  // The remote's chain gets the same revocation checks as a client's in mode: server (CRL files
  // in the handshake, OCSP / distribution points after it, recheck of live connections).
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
}

asio::awaitable<void> serve(session& s) {
  // Not `a && !co_await b`: GCC 12 miscompiles a co_await inside a short-circuit operand.
  if (s.listener->cfg.accept_proxy_protocol.enabled) {
    const bool go_on = co_await accept_proxy_header(s);
    if (!go_on) co_return;
  }
  if (s.listener->cfg.mode == config::listener_mode::server)
    co_await serve_server(s);
  else
    co_await serve_client(s);
}

}  // namespace

void session_control::kill() {
  killed_ = true;
  if (watchdog_) watchdog_->cancel();
}

void session_control::kill(reason why, std::string detail) {
  kill(why == reason::revoked ? termination::revoked : termination::error, why, std::move(detail));
}

void session_control::kill(termination how, std::optional<reason> why, std::string detail) {
  if (killed_) return;
  kill_termination_ = how;
  kill_reason_ = why;
  kill_detail_ = std::move(detail);
  kill();
}

void session_control::watch_revocation(const std::string* listener,
                                       std::vector<tls::revocation::peer_cert_id> certs) {
  listener_ = listener;
  peer_certs_ = std::move(certs);
}

bool session_control::revoke_if(const tls::revocation::revocation_event& e) {
  if (killed_ || peer_certs_.empty()) return false;
  if (!e.listener.empty() && (!listener_ || *listener_ != e.listener)) return false;
  const int depth = tls::revocation::revoked_depth(e, peer_certs_);
  if (depth < 0) return false;
  kill(reason::revoked, "certificate at depth " + std::to_string(depth) +
                            " revoked while connected (" + e.source + ")");
  return true;
}

void session_control::judged(SSL* ssl, const config::ip_address* source,
                             const runtime::listener_runtime* current) {
  ssl_ = ssl;
  source_ = source;
  current_ = current;
}

namespace {

// Whether `lr` admits the peer of `ssl` (connecting from `source`): nothing, or why not.
std::optional<std::pair<reason, std::string>> verdict_of(const runtime::listener_runtime& lr,
                                                         SSL* ssl,
                                                         const config::ip_address* source) {
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (lr.cfg.mode == config::listener_mode::server) {
    const auto& ca = lr.cfg.client_auth;
    if (ca.mode == config::client_auth_mode::none) return std::nullopt;
    // What the handshake's verify mode does (see tls/context.cpp): optional admits a client
    // without a certificate unless there is an allow list.
    if (!leaf) {
      if (ca.mode == config::client_auth_mode::optional && ca.allow.empty()) return std::nullopt;
      return std::pair{reason::no_client_cert, std::string("client sent no certificate")};
    }
  } else if (lr.cfg.server_auth.insecure_skip_verify || !leaf) {
    return std::nullopt;
  }
  // The chain as verified (after a full handshake), else what the peer sent: everything but
  // the leaf is offered as untrusted intermediates, so that a former anchor no longer in the
  // trust store leads nowhere.
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  if (!chain) chain = SSL_get_peer_cert_chain(ssl);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  if (!untrusted) return std::nullopt;
  for (int i = 0; chain && i < sk_X509_num(chain); ++i)
    if (X509* c = sk_X509_value(chain, i); c != leaf && X509_cmp(c, leaf) != 0)
      sk_X509_push(untrusted, c);
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  auto out = lr.tls.peer_verifier->verify_offline(lr.tls.ctx.get(), leaf, untrusted, std::nullopt,
                                                  {source, sni ? sni : ""});
  sk_X509_free(untrusted);
  if (!out.refusal) return std::nullopt;
  return std::pair{*out.refusal, std::move(out.detail)};
}

}  // namespace

bool session_control::rejudge(const runtime::listener_runtime& next) {
  if (killed_ || !ssl_ || !current_ || &next == current_ || next.cfg.mode != current_->cfg.mode)
    return false;
  auto now = verdict_of(next, ssl_, source_);
  if (!now) return false;
  // revocation.recheck_established: false keeps revoked peers' open connections: a reload that
  // brings a new CRL must not close them either.
  if ((now->first == reason::revoked || now->first == reason::revocation_unavailable) &&
      !next.cfg.revocation.recheck_established)
    return false;
  // Refused by the old runtime too (e.g. the certificate expired while connected): the reload
  // did not change this peer's verdict, so it is not the reload's to act on.
  if (verdict_of(*current_, ssl_, source_)) return false;
  kill(termination::reload_rejudged, now->first, "reload_rejudged: " + now->second);
  return true;
}

void session_registry::kill_all() {
  // kill() only cancels a timer; sessions unregister themselves later, from their own frames.
  for (auto* s : live_)
    s->kill();
}

std::size_t session_registry::revoke(const tls::revocation::revocation_event& e) {
  std::size_t n = 0;
  for (auto* s : live_)
    if (s->revoke_if(e)) ++n;
  return n;
}

std::size_t session_registry::rejudge(const runtime::runtime& next) {
  std::size_t n = 0;
  // kill() only cancels a timer: sessions unregister later, from their own frames.
  for (auto* s : live_) {
    if (!s->current_listener()) continue;
    if (auto lr = next.find(s->current_listener()->cfg.name); lr && s->rejudge(*lr)) ++n;
  }
  return n;
}

namespace {

// An exception that ended a session: an internal error.
outcome failure(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return outcome{outcome::kind::failed, x.what()};
  } catch (...) {
    return outcome{outcome::kind::failed, "unknown exception"};
  }
}

// A session killed for a reason the peer should hear of (revoked) gets close_notify, bounded.
asio::awaitable<void> close_notify(session& s) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(s.peer.get_executor(), std::chrono::seconds(1));
  co_await (s.tls->shutdown_send() || deadline.async_wait(as_tuple(use_awaitable)));
}

}  // namespace

asio::awaitable<void> run_session(stream_socket peer,
                                  std::shared_ptr<const runtime::listener_runtime> listener,
                                  session_registry& registry, admission_ticket ticket) {
  session s(std::move(peer), std::move(listener));
  s.ticket = std::move(ticket);
  error_code peer_ec;
  s.remote = s.peer.remote_endpoint(peer_ec);
  if (!peer_ec) {
    s.client = format_endpoint(s.remote);
    s.source = ip_of(s.remote.data());
  }
  trace_accepted(s);
  s.control.attach(&s.watchdog_timer);
  registry.add(&s.control);
  struct unregister {
    session_registry& r;
    session_control* c;
    ~unregister() { r.remove(c); }
  } guard{registry, &s.control};

  set_nodelay(s.peer);
  // The serving side and the watchdog race; the first to finish — returning, throwing, or
  // timing out — cancels the other at once (wait_for_one; awaitable_operators' || would wait
  // for the watchdog when the serving side throws, and drop the exception). Named operands:
  // GCC 12 mishandles temporaries inside a co_await expression.
  auto ex = s.peer.get_executor();
  auto serving = asio::co_spawn(ex, serve(s), asio::deferred);
  auto watching = asio::co_spawn(ex, watchdog(s), asio::deferred);
  auto group = asio::experimental::make_parallel_group(std::move(serving), std::move(watching));
  auto [order, serve_error, watch_error, watch_result] =
      co_await std::move(group).async_wait(asio::experimental::wait_for_one(), use_awaitable);
  outcome o = order[0] == 0 ? outcome{} : watch_result;
  if (std::exception_ptr e = order[0] == 0 ? serve_error : watch_error) o = failure(e);
  if (o.how == outcome::kind::killed && s.control.kill_reason() && s.tls && s.admitted) {
    try {
      co_await close_notify(s);
    } catch (const std::exception&) {
      o = failure(std::current_exception());
    }
  }
  finish(s, o);
}

}  // namespace mtlsd::proxy
