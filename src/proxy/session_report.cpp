// The end of a session as the outside sees it: metric updates and the one access-log line.
#include <chrono>

#include "mtlsd/config/duration.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

void count_revocation(session& s, const tls::verify_outcome& vo) {
  if (!s.listener->metrics) return;
  if (int i = tls::revocation::metric_index(vo.staple); i >= 0)
    s.listener->metrics->revocation_checks[1][static_cast<std::size_t>(i)]->Increment();
  if (vo.crl == tls::crl_result::not_checked) return;
  std::size_t result = 0;
  switch (vo.crl) {
    case tls::crl_result::good:
      result = 0;
      break;
    case tls::crl_result::revoked:
      result = 1;
      break;
    case tls::crl_result::unavailable:
      result = 3;
      break;
    case tls::crl_result::not_checked:
      return;
  }
  s.listener->metrics->revocation_checks[0][result]->Increment();
  if (vo.crl == tls::crl_result::unavailable && !vo.refusal)
    log::warn("admitted without a usable CRL (revocation.on_unavailable: allow)",
              {{"listener", s.listener->cfg.name}, {"client", s.client}, {"detail", vo.crl_note}});
}

void count_verdict(session& s, const tls::revocation::verdict& v) {
  auto* m = s.listener->metrics;
  if (!m) return;
  if (int i = tls::revocation::metric_index(v.crl); i >= 0)
    m->revocation_checks[0][static_cast<std::size_t>(i)]->Increment();
  if (int i = tls::revocation::metric_index(v.ocsp); i >= 0)
    m->revocation_checks[1][static_cast<std::size_t>(i)]->Increment();
}

void observe_handshake(session& s) {
  const auto& lr = *s.listener;
  if (!lr.metrics) return;
  lr.metrics->handshake_duration->Observe(
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
      s.refuse(reason::handshake_timeout, "no completed TLS handshake within " + after);
      break;
    case phase::revocation:
      s.refuse(reason::revocation_unavailable, "no revocation answer within " + after);
      break;
    case phase::connect:
      if (lr.metrics) lr.metrics->upstream_connect_failures->Increment();
      // connect_step names the step still running (e.g. "DNS lookup of X") when there was one.
      s.refuse(reason::upstream_unavailable,
               s.connect_step.empty()
                   ? "connect to " + cfg.upstream.str() + " timed out after " + after
                   : s.connect_step + " timed out after " + after + " (connect to " +
                         cfg.upstream.str() + ")");
      break;
    case phase::relay:
      if (s.clock.past_close_by())
        s.detail = "half-close timeout (" + config::format_duration(cfg.timeouts.half_close) +
                   " after one side finished)";
      else
        s.detail = "idle timeout (" + after + ")";
      break;
    case phase::closing:
      break;
  }
}

}  // namespace

void finish(session& s, const outcome& o) {
  const auto& lr = *s.listener;
  const auto& cfg = lr.cfg;
  switch (o.how) {
    case outcome::kind::completed:
      break;
    case outcome::kind::deadline:
      name_deadline(s);
      break;
    case outcome::kind::killed:
      if (s.control.kill_reason()) s.refuse(*s.control.kill_reason(), s.control.kill_detail());
      if (s.detail.empty()) s.detail = "closed by mtlsd (drain timeout)";
      break;
    case outcome::kind::failed:
      // Whatever was known before, the session ended because of this.
      s.detail = "internal error: " + o.error;
      log::error("session failed",
                 {{"listener", cfg.name}, {"client", s.client}, {"error", o.error}});
      break;
  }
  if (s.aged) {  // termination cause max_age (and how the graceful close ended)
    std::string then = s.detail.empty() ? "closed gracefully" : "then " + s.detail;
    s.detail = "max_age: timeouts.max_connection_age (" +
               config::format_duration(cfg.timeouts.max_connection_age) + ") reached, " +
               std::move(then);
  }
  if (s.relayed.aborted && s.detail.empty()) s.detail = s.relayed.error;

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
    if (s.admitted) m->connection_duration->Observe(std::chrono::duration<double>(elapsed).count());
    if (rx) m->rx_bytes->Increment(static_cast<double>(rx));
    if (tx) m->tx_bytes->Increment(static_cast<double>(tx));
  }
  log::access_record rec;
  rec.listener = cfg.name;
  rec.client = std::move(s.client);
  if (s.peer_identity) rec.identity = s.peer_identity->display();
  rec.tls_version = s.tls_version;
  rec.cipher = s.cipher;
  rec.resumed = s.resumed;
  rec.rx_bytes = rx;
  rec.tx_bytes = tx;
  rec.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  rec.result = result;
  rec.reason = s.refusal && !failed ? to_string(*s.refusal) : std::string_view();
  rec.detail = std::move(s.detail);
  log::write_access(rec);
}

}  // namespace mtlsd::proxy::detail
