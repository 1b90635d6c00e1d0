// What the client of an http: listener refused after its handshake is told (session_state.hpp).
#include <nghttp2/nghttp2.h>

#include <boost/asio/buffer.hpp>
#include <string>

#include "http1_io.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

namespace {
bool http_listener(const session& s) {
  // Only server-mode listeners have an http: block (config validation); said here too, since
  // a client-mode listener's peer is a server, to which an HTTP answer would be nonsense.
  const auto& cfg = s.listener->cfg;
  return cfg.http.enabled && cfg.mode == config::listener_mode::server;
}
}  // namespace

asio::awaitable<bool> answer_refused(session& s, tls_stream& tls, const http_answer& a) {
  if (!http_listener(s)) co_return false;
  if (speaks_h2(s.listener->cfg, tls.native())) {
    co_await answer_h2_refused(s, tls, a);
    co_return true;
  }
  const std::string answer = http1::simple_response(a.status, a.status_text, a.why);
  // A failure ends the connection all the same. What went is counted as sent to the client
  // (tx_bytes; http: listeners are server mode, where that is relayed.from_plain).
  if (!co_await tls.write(asio::buffer(answer))) s.relayed.from_plain += answer.size();
  co_return true;
}

asio::awaitable<bool> answer_connect_refused(session& s, tls_stream& tls) {
  // Out of descriptors for the upstream socket is our capacity, not the upstream's failure.
  if (s.refusal == reason::over_capacity)
    co_return co_await answer_refused(s, tls, over_capacity_answer);
  co_return co_await answer_refused(s, tls,
                                    {502, "Bad Gateway", NGHTTP2_NO_ERROR, "upstream unavailable"});
}

}  // namespace mtlsd::proxy::detail
