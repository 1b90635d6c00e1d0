// How an HTTP/2 client of an http: listener refused after its handshake is answered
// (session_state.hpp's answer_refused): its requests get the refusal as a response, then GOAWAY.
//
// A GOAWAY naming no stream as processed, alone after the server's SETTINGS, tells a client that
// none of its requests was taken, so it may send them again at once, and gRPC does: the
// connection was made (its backoff starts over) and the call was not processed (a transparent
// retry). Each waiting call then made a new connection 150-185 times a second until its deadline,
// for good without one (review). A response is an answer: the call ends with the status gRPC
// reads from it (403 PERMISSION_DENIED, 429 and 50x UNAVAILABLE), as behind Envoy's local replies.
#include <nghttp2/nghttp2.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "h2_session.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

using namespace asio::experimental::awaitable_operators;
using asio::as_tuple;
using asio::use_awaitable;

// How long the client's requests are waited for once our SETTINGS went out. Clients send them
// with their preface (curl, nghttp, browsers) or one round trip later, on our SETTINGS (gRPC).
constexpr auto request_wait = std::chrono::seconds(1);
// What is read from a refused client at most: its preface, settings and the requests' heads, in
// bytes and in reads (each a TLS record at most: one-byte records must not cost more; review).
constexpr std::size_t max_read = 256 * 1024;
constexpr int max_reads = 256;

struct input_read {
  std::size_t bytes = 0;
  int reads = 0;
};

// A request read, for its report once answered (method, path... as nghttp2 parsed its head).
struct request_read {
  http_request_report report;
  std::string host;      // Host, the authority when there is no :authority
  std::size_t sent = 0;  // of the body (a tiny window splits it)
  bool answered = false;
};

struct refusal {
  std::string body;                               // the reason, as text
  header_list head;                               // the response's fields
  std::map<std::int32_t, request_read> requests;  // by stream
  bool answered = false;                          // a request got the answer
};

refusal& refusal_of(void* user_data) {
  return *static_cast<refusal*>(user_data);
}

ssize_t read_body(nghttp2_session*, std::int32_t id, std::uint8_t* buf, std::size_t length,
                  std::uint32_t* flags, nghttp2_data_source*, void* self) {
  auto& r = refusal_of(self);
  const std::string& body = r.body;
  std::size_t& sent = r.requests[id].sent;
  const std::size_t n = std::min(length, body.size() - sent);
  std::copy_n(body.data() + sent, n, buf);
  sent += n;
  if (sent == body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto& q = refusal_of(self).requests[f->hd.stream_id].report;
  q.http2 = true;
  q.stream_id = f->hd.stream_id;
  q.started = steady::now();
  q.started_at = std::chrono::system_clock::now();
  return 0;
}

int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name_data,
              std::size_t name_size, const std::uint8_t* value_data, std::size_t value_size,
              std::uint8_t, void* self) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto& q = refusal_of(self).requests[f->hd.stream_id];
  const std::string_view name(reinterpret_cast<const char*>(name_data), name_size);
  const std::string_view value(reinterpret_cast<const char*>(value_data), value_size);
  if (name == ":method")
    q.report.method = value;
  else if (name == ":path")
    q.report.path = value;
  else if (name == ":authority")
    q.report.authority = value;
  else if (name == "host")
    q.host = value;
  return 0;
}

int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t*,
                  std::size_t len, void* self) {
  auto& requests = refusal_of(self).requests;
  if (auto it = requests.find(id); it != requests.end()) it->second.report.req_bytes += len;
  return 0;
}

// A request's head is complete: it gets the answer, whatever its body still sends (the GOAWAY and
// the close that follow end that).
int on_frame_recv(nghttp2_session* session, const nghttp2_frame* f, void* self) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto& r = refusal_of(self);
  const auto head = h2::to_nv(r.head);
  nghttp2_data_provider provider{};
  provider.read_callback = read_body;
  if (nghttp2_submit_response(session, f->hd.stream_id, head.data(), head.size(), &provider) == 0)
    r.answered = r.requests[f->hd.stream_id].answered = true;
  return 0;
}

nghttp2_session* new_session(refusal& r) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return nullptr;
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session* session = nullptr;
  const int rv = nghttp2_session_server_new(&session, cb, &r);
  nghttp2_session_callbacks_del(cb);
  return rv == 0 ? session : nullptr;
}

// Writes what the session has to send; false when the client can no longer be written to.
asio::awaitable<bool> flush(session& s, tls_stream& tls, nghttp2_session* h2) {
  std::string out;
  if (h2::collect_output(h2, out, SIZE_MAX) != 0) co_return false;
  if (out.empty()) co_return true;
  if (co_await tls.write(asio::buffer(out))) co_return false;
  s.relayed.from_plain += out.size();  // tx_bytes (http: listeners are server mode)
  co_return true;
}

// Reads what the client sent into the session, waiting up to `until`; false once there is
// nothing more to read (the time or the bounds are up, the client closed or broke the protocol).
asio::awaitable<bool> take_input(session& s, tls_stream& tls, nghttp2_session* h2,
                                 steady::time_point until, input_read& in) {
  std::array<std::uint8_t, 4096> buf;
  for (;;) {
    if (steady::now() >= until || in.reads >= max_reads) co_return false;
    // Without waiting for the socket (the wait below has a deadline of its own), but with
    // OpenSSL's wish to write first (a key update) taken care of.
    const auto [ec, n] = co_await tls.try_read_some(asio::buffer(buf));
    if (!ec) {
      ++in.reads;
      in.bytes += n;
      s.relayed.from_tls += n;  // rx_bytes, as the HTTP/2 relay counts what it reads
      // The worker's other connections get their turn, as with every reader (review: a client
      // sending one-byte records held its worker for half a second).
      if (in.reads % tls_stream::reads_per_turn == 0)
        co_await asio::post(s.peer.get_executor(), use_awaitable);
      co_return in.bytes <= max_read&& nghttp2_session_mem_recv(h2, buf.data(), n) >= 0;
    }
    if (ec != asio::error::would_block) co_return false;
    asio::steady_timer timer(s.peer.get_executor(), until);
    auto ready = co_await (s.peer.async_wait(stream_socket::wait_read, as_tuple(use_awaitable)) ||
                           timer.async_wait(as_tuple(use_awaitable)));
    if (ready.index() != 0 || std::get<0>(std::get<0>(ready))) co_return false;
  }
}

}  // namespace

asio::awaitable<void> answer_h2_refused(session& s, tls_stream& tls, const http_answer& a,
                                        std::vector<http_request_report>& answered) {
  refusal r{std::string(a.why) + "\n", {}, {}};
  r.head = {{":status", std::to_string(a.status)},
            {"content-type", "text/plain"},
            {"content-length", std::to_string(r.body.size())}};
  h2::session_ptr h2(new_session(r));
  if (!h2) co_return;
  // The server preface; no setting differs from the protocol's defaults.
  nghttp2_submit_settings(h2.get(), NGHTTP2_FLAG_NONE, nullptr, 0);
  s.enter(phase::closing, request_wait + std::chrono::seconds(1));
  const auto until = steady::now() + request_wait;
  input_read in;
  bool open = co_await flush(s, tls, h2.get());
  while (open && !r.answered) {
    open = co_await take_input(s, tls, h2.get(), until, in);
    // What the input asked for (SETTINGS ACK, the answers) goes out as it comes.
    if (open || r.answered) open = co_await flush(s, tls, h2.get());
  }
  // The last stream processed: the highest one answered, or none (0) when no request came.
  nghttp2_submit_goaway(h2.get(), NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(h2.get()), a.goaway_code,
                        reinterpret_cast<const std::uint8_t*>(a.why.data()), a.why.size());
  const bool sent = co_await flush(s, tls, h2.get()) && open;
  for (auto& [id, q] : r.requests) {
    if (!q.answered) continue;
    auto& report = answered.emplace_back(std::move(q.report));
    if (report.authority.empty()) report.authority = std::move(q.host);
    // A write that failed leaves the answer's arrival unknown: no response, as anywhere.
    report.status = sent ? a.status : 0;
    report.resp_bytes = sent ? q.sent : 0;
  }
}

}  // namespace mtlsd::proxy::detail
