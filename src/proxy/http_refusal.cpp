// What the client of an http: listener refused after its handshake is told (session_state.hpp).
#include <nghttp2/nghttp2.h>

#include <boost/asio/buffer.hpp>
#include <string>
#include <vector>

#include "http1_io.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

namespace {
bool http_listener(const session& s) {
  // Only server-mode listeners have an http: block (config validation); said here too, since
  // a client-mode listener's peer is a server, to which an HTTP answer would be nonsense.
  const auto& cfg = s.listener->cfg;
  return cfg.http.enabled && cfg.mode == config::listener_mode::server;
}

// Each answered request is one, as relayed ones are: its "request" line (status: the answer's;
// detail: the refusal's reason and detail) and its count in the mtlsd_http_* metrics.
void report_answered(const session& s, std::vector<http_request_report>& answered) {
  std::string detail;
  if (s.refusal) detail = to_string(*s.refusal);
  if (!s.detail.empty()) detail += (detail.empty() ? "" : ": ") + s.detail;
  for (auto& r : answered) {
    r.detail = detail;
    report_http_request(s, r);
  }
}
}  // namespace

asio::awaitable<bool> answer_refused(session& s, tls_stream& tls, const http_answer& a) {
  if (!http_listener(s)) co_return false;
  std::vector<http_request_report> answered;
  if (speaks_h2(s.listener->cfg, tls.native())) {
    co_await answer_h2_refused(s, tls, a, answered);
    report_answered(s, answered);
    co_return true;
  }
  // The request is not read: no method or path, as for a head that did not parse.
  auto& r = answered.emplace_back();
  r.stream_id = 1;
  r.started = steady::now();
  r.started_at = std::chrono::system_clock::now();
  const std::string answer = http1::simple_response(a.status, a.status_text, a.why);
  // A failure ends the connection all the same. What went is counted as sent to the client
  // (tx_bytes; http: listeners are server mode, where that is relayed.from_plain).
  if (!co_await tls.write(asio::buffer(answer))) {
    s.relayed.from_plain += answer.size();
    r.status = a.status;
    r.resp_bytes = a.why.size() + 1;  // the body: the reason and a newline
  }
  report_answered(s, answered);
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
