// log.level: debug — one line per phase of a connection, each with its conn_id, so that
// `grep conn_id=N` tells one connection's story. Above debug every function returns before
// building anything: this is the hot path.
#include <openssl/ssl.h>

#include <chrono>

#include "mtlsd/log/log.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

bool debugging() {
  return log::enabled(spdlog::level::debug);
}

std::int64_t ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

std::string_view reason_of(const session& s) {
  return s.refusal ? to_string(*s.refusal) : std::string_view();
}

std::string_view subject_of(const tls::peer_identity* id) {
  return id ? std::string_view(id->subject) : std::string_view();
}

}  // namespace

void trace_accepted(const session& s) {
  if (!debugging()) return;
  log::debug("accepted",
             {{"conn_id", s.conn_id}, {"listener", s.listener->cfg.name}, {"client", s.client}});
}

// Mode client; in mode server the ClientHello is logged by tls/client_hello.cpp as it arrives.
void trace_client_hello_sent(const session& s, SSL* ssl) {
  if (!debugging()) return;
  std::string alpn;
  for (const auto& p : s.listener->cfg.tls.alpn)
    alpn += (alpn.empty() ? "" : ",") + p;
  log::debug("ClientHello sent",
             {{"conn_id", s.conn_id}, {"sni", sni_of(ssl)}, {"alpn_offered", alpn}});
}

void trace_handshake_failed(const session& s, bool judged_by_verify_callback) {
  if (!debugging()) return;
  log::debug("TLS handshake failed", {{"conn_id", s.conn_id},
                                      {"tls_version", s.tls_version},
                                      {"reason", reason_of(s)},
                                      {"detail", s.detail}});
  if (judged_by_verify_callback)  // a certificate was judged (and refused) in the handshake
    log::debug("peer judged", {{"conn_id", s.conn_id},
                               {"verdict", "deny"},
                               {"peer_subject", subject_of(s.unverified_peer.get())},
                               {"reason", reason_of(s)},
                               {"detail", s.detail}});
}

void trace_handshake_done(const session& s) {
  if (!debugging()) return;
  log::debug("TLS handshake done",
             {{"conn_id", s.conn_id},
              {"tls_version", s.tls_version},
              {"cipher", s.cipher},
              {"resumed", s.resumed},
              {"peer_subject", subject_of(s.peer_identity ? &*s.peer_identity : nullptr)}});
}

void trace_judged(const session& s, bool admitted) {
  if (!debugging()) return;
  const std::string_view identity =
      s.peer_identity ? std::string_view(s.peer_identity->display()) : std::string_view();
  if (admitted)
    log::debug("peer judged",
               {{"conn_id", s.conn_id}, {"verdict", "allow"}, {"identity", identity}});
  else
    log::debug("peer judged", {{"conn_id", s.conn_id},
                               {"verdict", "deny"},
                               {"identity", identity},
                               {"reason", reason_of(s)},
                               {"detail", s.detail}});
}

void trace_connect(const session& s, steady::time_point begin, steady::time_point resolved,
                   const error_code& ec, const std::string& why) {
  if (!debugging()) return;
  const auto& to = s.listener->cfg.upstream;
  if (resolved != steady::time_point{})
    log::debug(
        "upstream resolved",
        {{"conn_id", s.conn_id}, {"host", to.host}, {"resolve_ms", ms_between(begin, resolved)}});
  if (!ec)
    log::debug("upstream connected", {{"conn_id", s.conn_id},
                                      {"upstream", s.upstream_address},
                                      {"connect_ms", s.upstream_connect_ms}});
  else
    log::debug("upstream connect failed", {{"conn_id", s.conn_id},
                                           {"upstream", to.str()},
                                           {"connect_ms", s.upstream_connect_ms},
                                           {"error", why.empty() ? ec.message() : why}});
}

void trace_relay_start(const session& s) {
  if (!debugging()) return;
  log::debug("relay started", {{"conn_id", s.conn_id}, {"upstream", s.upstream_address}});
}

void trace_closed(const session& s, termination ended, std::uint64_t rx, std::uint64_t tx,
                  std::int64_t duration_ms) {
  if (!debugging()) return;
  log::debug("closed", {{"conn_id", s.conn_id},
                        {"termination", to_string(ended)},
                        {"rx_bytes", rx},
                        {"tx_bytes", tx},
                        {"duration_ms", duration_ms}});
}

}  // namespace mtlsd::proxy::detail
