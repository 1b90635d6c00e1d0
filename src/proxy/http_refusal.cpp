// What the client of an http: listener refused after its handshake is told (session_state.hpp).
#include <nghttp2/nghttp2.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http1_io.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

namespace {

using namespace asio::experimental::awaitable_operators;
using asio::as_tuple;
using asio::use_awaitable;

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

// What the client sends first, waited for up to `until`: what one read then gives (one TLS
// record at most), 0 when nothing came (the time is up, the client closed or failed).
asio::awaitable<std::size_t> first_bytes(session& s, tls_stream& tls, asio::mutable_buffer buf,
                                         steady::time_point until) {
  for (;;) {
    const auto [ec, n] = co_await tls.try_read_some(buf);
    if (!ec) co_return n;
    if (ec != asio::error::would_block || steady::now() >= until) co_return 0;
    asio::steady_timer timer(s.peer.get_executor(), until);
    auto ready = co_await (s.peer.async_wait(stream_socket::wait_read, as_tuple(use_awaitable)) ||
                           timer.async_wait(as_tuple(use_awaitable)));
    if (ready.index() != 0 || std::get<0>(std::get<0>(ready))) co_return 0;
  }
}

// The HTTP/1.1 request the client sent, read before it is answered as nginx does, waiting up to
// refused_request_wait for it (past empty lines too): none when nothing came (a client that only
// made its handshake, or empty lines), else one request, with its method, target and authority
// when its head is whole in what was read (up to 16 KiB) and parses, as serve_http's line would
// have them. The rest of what it sent is left for the lingering close to discard. Out of
// descriptors, nothing is waited for (session.cpp holds that socket no longer than a second).
asio::awaitable<std::optional<http_request_report>> sent_request(session& s, tls_stream& tls) {
  std::array<char, 16 * 1024> buf;
  const std::chrono::seconds wait =
      s.refusal == reason::over_capacity ? std::chrono::seconds(0) : refused_request_wait;
  s.enter(phase::closing, wait + std::chrono::seconds(1));
  const auto until = steady::now() + wait;
  std::size_t n = 0, lead = 0;  // RFC 9112 2.2: empty lines before a request line are no request
  auto only_empty_lines = [&] { return lead == n || (n - lead == 1 && buf[lead] == '\r'); };
  while (n < buf.size()) {
    const std::size_t got =
        co_await first_bytes(s, tls, asio::buffer(buf.data() + n, buf.size() - n), until);
    if (got == 0) break;
    s.relayed.from_tls += got;  // rx_bytes
    n += got;
    while (n >= lead + 2 && buf[lead] == '\r' && buf[lead + 1] == '\n')
      lead += 2;
    if (!only_empty_lines()) break;
  }
  if (only_empty_lines()) co_return std::nullopt;
  http_request_report r;
  r.stream_id = 1;
  r.started = steady::now();
  r.started_at = std::chrono::system_clock::now();
  const std::string_view have(buf.data() + lead, n - lead);
  if (const auto end = have.find("\r\n\r\n"); end != std::string_view::npos) {
    unfold_head({buf.data() + lead, end + 4});
    request_framing p;
    p.header_limit(http_head_limit);
    p.count_body_in(r.req_bytes);  // the head alone is parsed: the body is not counted
    error_code perr;
    p.put(asio::buffer(have.data(), end + 4), perr);
    if (!perr && p.is_header_done()) {
      r.method = p.head().method_text;
      r.path = origin_form(p.head());
      r.authority = request_authority(p.head());
    }
  }
  co_return r;
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
  // Answered whether or not a request came, as nginx answers a refused connection; reported as a
  // request only when one had come.
  std::optional<http_request_report> request = co_await sent_request(s, tls);
  const std::string_view method = request ? std::string_view(request->method) : std::string_view();
  const std::string answer = http1::simple_response(a.status, a.status_text, a.why, method);
  // A failure ends the connection all the same. What went is counted as sent to the client
  // (tx_bytes; http: listeners are server mode, where that is relayed.from_plain).
  const bool sent = !co_await tls.write(asio::buffer(answer));
  if (sent) s.relayed.from_plain += answer.size();
  if (!request) co_return true;
  auto& r = answered.emplace_back(std::move(*request));
  if (sent) {
    r.status = a.status;
    // The body: the reason and a newline (none to HEAD).
    r.resp_bytes = r.method == "HEAD" ? 0 : a.why.size() + 1;
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
