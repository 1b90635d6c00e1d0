// The end of a session as the outside sees it: metric updates and the one access-log line.
#include <openssl/ssl.h>

#include <chrono>

#include "mtlsd/config/duration.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

void warn_admitted_without_crl(const session& s, std::string_view detail) {
  log::warn("admitted without a usable CRL (revocation.on_unavailable: allow)",
            {{"conn_id", s.conn_id},
             {"listener", s.listener->cfg.name},
             {"client", s.client},
             {"detail", detail}});
}

void count_revocation(session& s, const tls::verify_outcome& vo) {
  if (!s.listener->metrics) return;
  s.listener->metrics->revocation_check(revocation_method::ocsp, vo.staple);
  s.listener->metrics->revocation_check(revocation_method::crl, vo.crl);
  if (vo.crl == revocation_status::unavailable && !vo.refusal)
    warn_admitted_without_crl(s, vo.crl_note);
}

void count_verdict(session& s, const tls::revocation::verdict& v) {
  auto* m = s.listener->metrics;
  if (!m) return;
  m->revocation_check(revocation_method::crl, v.crl);
  m->revocation_check(revocation_method::ocsp, v.ocsp);
}

void observe_handshake(session& s) {
  const auto& lr = *s.listener;
  if (!lr.metrics) return;
  // From the handshake on (nothing is relayed or answered before it), mtlsd_bytes_total moves
  // as bytes do (relay.hpp's byte_count), not only when the connection closes; finish() adds
  // the rest.
  const bool server = lr.cfg.mode == config::listener_mode::server;
  s.relayed.from_tls.meter(server ? lr.metrics->rx_bytes : lr.metrics->tx_bytes);
  s.relayed.from_plain.meter(server ? lr.metrics->tx_bytes : lr.metrics->rx_bytes);
  lr.metrics->handshake_duration->observe(
      std::chrono::duration<double>(steady::now() - s.start).count());
  if (s.resumed) lr.metrics->resumed->Increment();
  lr.registry->count_handshake(lr.cfg.name, s.tls_version, s.cipher);
}

namespace {

// A deadline passed: the reason (before admission) or the detail (after) says which.
void name_deadline(session& s) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  const std::string after = config::format_duration(s.phase_timeout);
  switch (s.current) {
    case phase::proxy_header:
      s.refuse(reason::protocol_error, "no complete PROXY header within " + after);
      break;
    case phase::handshake:
      if (s.handshake_cut_by_drain) {
        s.refuse(reason::shutting_down,
                 "shutdown began during the TLS handshake, which did not finish within " +
                     config::format_duration(drain_handshake_grace));
        s.ended_by = termination::drain;
        break;
      }
      s.refuse(reason::handshake_timeout, "no completed TLS handshake within " + after);
      break;
    case phase::revocation:
      s.refuse(reason::revocation_unavailable, "no revocation answer within " + after);
      // No verdict came for count_verdict: each method the check waited on had no answer. (The
      // lookups are bounded by the timeout, so this backstop is not expected to be reached.)
      if (lr.metrics) {
        if (lr.revocation.ocsp != config::ocsp_mode::off)
          lr.metrics->revocation_check(revocation_method::ocsp, revocation_status::unavailable);
        if (lr.revocation.crl_files || lr.revocation.distribution_points)
          lr.metrics->revocation_check(revocation_method::crl, revocation_status::unavailable);
      }
      break;
    case phase::connect:
      // connect_phase's own bound refused and counted it already; this is the backstop.
      if (s.refusal) break;
      if (lr.metrics) lr.metrics->upstream_connect_failures->Increment();
      s.refuse(reason::upstream_unavailable, connect_timeout_detail(s));
      break;
    case phase::relay:
      if (s.clock.past_head_by())
        s.detail = "request head not complete within " +
                   config::format_duration(cfg.http.request_headers_timeout) +
                   " of its first byte (http.request_headers_timeout)";
      else if (s.clock.past_close_by())
        s.detail = "half-close timeout (" + config::format_duration(cfg.timeouts.half_close) +
                   " after one side finished)";
      else
        s.detail = "idle timeout (" + after + ")";
      break;
    case phase::closing:
      break;
  }
}

// Who or what ended the session, from how it ended and, for a relay run to its end, which side
// finished first.
termination name_termination(const session& s, const outcome& o) {
  if (s.ended_by) return *s.ended_by;
  if (s.aged) return termination::max_age;
  if (s.relayed.rate_limited)
    return termination::rate_limited;  // however the graceful close then ended
  switch (o.how) {
    case outcome::kind::failed:
      return termination::error;
    case outcome::kind::killed:
      // A peer already refused, closed by a drain while it lingered, was still refused.
      if (!s.admitted && s.refusal && !s.control.kill_reason()) break;
      return s.control.kill_termination();
    case outcome::kind::deadline:
      if (s.current == phase::relay)
        return s.clock.past_close_by() ? termination::half_close_timeout
                                       : termination::idle_timeout;
      break;
    case outcome::kind::completed:
      break;
  }
  if (!s.admitted) {
    if (!s.refusal) return termination::error;
    return *s.refusal == reason::rate_limited ? termination::rate_limited : termination::refused;
  }
  // The TLS side is the client in mode: server and the upstream in mode: client.
  const bool server = s.listener->cfg.mode == config::listener_mode::server;
  switch (s.relayed.first_end) {
    case relay_end::tls_peer:
      return server ? termination::client_close : termination::upstream_close;
    case relay_end::plain_peer:
      return server ? termination::upstream_close : termination::client_close;
    case relay_end::local:
    case relay_end::none:
      // Closed by us at a boundary because shutdown began (GOAWAY, Connection: close).
      if (s.control.draining() && !s.relayed.aborted) return termination::drain;
      break;
  }
  return termination::error;
}

// Completes `rec` with what the connection knew (who, TLS, upstream, the peer's certificate)
// and writes it. The views point into `s` and its SSL, and into buffers on this frame.
void write_access_line(session& s, log::access_record& rec) {
  char start[32];
  fill_connection(s, rec);
  rec.start = log::format_rfc3339(start, s.started_at, true);
  rec.client = std::move(s.client);
  // The verified peer, else the leaf an unverified one presented (refused, or insecure).
  const tls::peer_identity* cert = s.peer_identity     ? &*s.peer_identity
                                   : s.unverified_peer ? s.unverified_peer.get()
                                                       : nullptr;
  char not_after[32];
  if (cert) {
    rec.peer_subject = cert->subject;
    rec.peer_serial = cert->serial;
    rec.peer_issuer = cert->issuer;
    rec.peer_sha256 = cert->sha256;
    if (cert->not_after != 0) rec.peer_not_after = log::format_rfc3339(not_after, cert->not_after);
  }
  rec.detail = std::move(s.detail);
  log::write_access(rec);
}

}  // namespace

std::string_view sni_of(SSL* ssl) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  return name ? std::string_view(name) : std::string_view();
}

std::string_view alpn_of(SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned n = 0;
  SSL_get0_alpn_selected(ssl, &p, &n);
  return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
}

void fill_connection(const session& s, log::access_record& rec) {
  rec.conn_id = s.conn_id;
  rec.listener = s.listener->cfg.name;
  if (s.peer_identity) rec.identity = s.peer_identity->display();
  rec.tls_version = s.tls_version;
  rec.cipher = s.cipher;
  if (s.tls) {
    rec.sni = s.sni;
    rec.alpn = alpn_of(s.tls->native());
  }
  rec.upstream = s.upstream_address;
  rec.resumed = s.resumed;
  rec.upstream_connect_ms = s.upstream_connect_ms;
}

namespace {

// The access line's detail for how `s` ended: from the outcome, then max_age and a relay error.
void describe_end(session& s, const outcome& o) {
  const auto& cfg = s.listener->cfg;
  switch (o.how) {
    case outcome::kind::completed:
      break;
    case outcome::kind::deadline:
      name_deadline(s);
      break;
    case outcome::kind::killed:
      if (s.control.kill_reason()) {
        s.refuse(*s.control.kill_reason(), s.control.kill_detail());
      } else if (!s.admitted && !s.refusal) {
        // The drain timeout ended it while it waited to be admitted (a revocation answer, its
        // upstream connect, a client-mode handshake): refused for the shutdown, not an internal
        // error (result=error is a bug to see; review).
        s.refuse(reason::shutting_down, "closed by mtlsd (drain timeout) before it was admitted");
        s.ended_by = termination::drain;
      }
      if (s.detail.empty()) s.detail = "closed by mtlsd (drain timeout)";
      break;
    case outcome::kind::failed:
      // Whatever was known before, the session ended because of this.
      s.detail = "internal error: " + o.error;
      log::error("session failed", {{"conn_id", s.conn_id},
                                    {"listener", cfg.name},
                                    {"client", s.client},
                                    {"error", o.error}});
      break;
  }
  if (s.aged) {  // termination cause max_age (and how the graceful close ended)
    std::string then = s.detail.empty() ? "closed gracefully" : "then " + s.detail;
    s.detail = "max_age: timeouts.max_connection_age (" +
               config::format_duration(cfg.timeouts.max_connection_age) + ") reached, " +
               std::move(then);
  }
  if (s.relayed.aborted && s.detail.empty()) s.detail = s.relayed.error;
}

}  // namespace

void finish(session& s, const outcome& o) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  describe_end(s, o);

  const bool failed = o.how == outcome::kind::failed;
  const char* result = "accepted";
  if (failed)
    result = "error";
  else if (!s.admitted)
    result = s.refusal ? "rejected" : "error";

  // server mode: rx = bytes the TLS client sent; client mode: rx = bytes the local app sent.
  const bool server = cfg.mode == config::listener_mode::server;
  const std::uint64_t rx = server ? s.relayed.from_tls : s.relayed.from_plain;
  const std::uint64_t tx = server ? s.relayed.from_plain : s.relayed.from_tls;
  const auto elapsed = steady::now() - s.start;

  if (auto* m = lr.metrics) {
    // An internal error counts under result="error" even after the connection was accepted:
    // every such error must be visible.
    if (failed || (!s.admitted && !s.refusal)) {
      m->errors->Increment();
    } else if (!s.admitted) {
      m->rejected->Increment();
      m->failure(*s.refusal).Increment();
    }
    if (s.admitted) m->connection_duration->observe(std::chrono::duration<double>(elapsed).count());
    // An admitted connection closed because its peer no longer is (revoked while connected,
    // refused by a reloaded policy).
    if (s.admitted && o.how == outcome::kind::killed && s.control.kill_reason())
      m->closed_for(*s.control.kill_reason()).Increment();
    else if (s.admitted && s.relayed.rate_limited)
      m->closed_for(reason::rate_limited).Increment();
    // What the relay did not give its counters yet (observe_handshake): the sums are exact.
    auto& rx_count = server ? s.relayed.from_tls : s.relayed.from_plain;
    auto& tx_count = server ? s.relayed.from_plain : s.relayed.from_tls;
    if (const auto rest = rx_count.give_rest()) m->rx_bytes->Increment(static_cast<double>(rest));
    if (const auto rest = tx_count.give_rest()) m->tx_bytes->Increment(static_cast<double>(rest));
  }
  const termination ended = name_termination(s, o);
  const auto duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  trace_closed(s, ended, rx, tx, duration_ms);

  log::access_record rec;
  rec.rx_bytes = rx;
  rec.tx_bytes = tx;
  rec.duration_ms = duration_ms;
  rec.result = result;
  rec.reason = s.refusal && !failed ? to_string(*s.refusal) : std::string_view();
  rec.termination = to_string(ended);
  write_access_line(s, rec);
}

}  // namespace mtlsd::proxy::detail
