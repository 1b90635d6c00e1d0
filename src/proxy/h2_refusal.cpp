// How an HTTP/2 client of an http: listener refused after its handshake is answered
// (session_state.hpp's answer_refused): its requests get the refusal as a response, then GOAWAY.
//
// A GOAWAY naming no stream as processed, alone after the server's SETTINGS, tells a client that
// none of its requests was taken, so it may send them again at once, and gRPC does: the
// connection was made (its backoff starts over) and the call was not processed (a transparent
// retry). Each waiting call then made a new connection 150-185 times a second until its deadline,
// for good without one (review). A response is an answer: the call ends, as behind Envoy's local
// replies. A gRPC call (its content-type says so) is answered Trailers-Only (grpc_reply.hpp): the
// status gRPC reads from the HTTP one (403 PERMISSION_DENIED, 429 and 50x UNAVAILABLE) and the
// reason as its message, where an HTTP answer left it "Received http2 header with status: 403".
//
// As many requests are answered as the listener's http.max_concurrent_streams, which the SETTINGS
// advertise as the normal HTTP/2 path's do; the others are reset with REFUSED_STREAM (not
// processed: the client may send them again). Without that bound one write of 300 HEADERS got 300
// answers, and 300 request lines and counts, from one refused connection (review).
#include <nghttp2/nghttp2.h>

#include <algorithm>
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

#include "grpc_reply.hpp"
#include "h2_session.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

using namespace asio::experimental::awaitable_operators;
using asio::as_tuple;
using asio::use_awaitable;

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
  bool grpc = false;     // a gRPC call: answered Trailers-Only, with no body
  bool answered = false;
};

struct refusal {
  std::string body;                               // the reason, as text
  header_list head;                               // the response's fields
  header_list grpc_head;                          // ... to a gRPC call (Trailers-Only)
  int grpc_status = -1;                           // its grpc-status
  std::size_t max_answers = 0;                    // http.max_concurrent_streams
  std::map<std::int32_t, request_read> requests;  // by stream: those that may still be answered
  std::size_t answers = 0;                        // requests that got the answer
  std::int32_t last_answered = 0;                 // the highest stream answered; 0: none
  bool answered() const { return answers > 0; }
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
  auto& r = refusal_of(self);
  // Refused once its head ends: nothing kept. Nor past max_answers entries: a stream nghttp2
  // rejects (a head without :path...) never ends its head here, and is erased on its close, but
  // the map stays bounded whatever the client sends (review: 25,000 entries from 256 KiB).
  if (r.answers >= r.max_answers || r.requests.size() > r.max_answers) return 0;
  auto& q = r.requests[f->hd.stream_id].report;
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
  auto& requests = refusal_of(self).requests;
  const auto it = requests.find(f->hd.stream_id);
  if (it == requests.end()) return 0;
  auto& q = it->second;
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
  else if (name == "content-type")
    q.grpc = h2::is_grpc_content_type(value);
  return 0;
}

int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t*,
                  std::size_t len, void* self) {
  auto& requests = refusal_of(self).requests;
  if (auto it = requests.find(id); it != requests.end()) it->second.report.req_bytes += len;
  return 0;
}

// A request's head is complete: it gets the answer, whatever its body still sends (the GOAWAY and
// the close that follow end that), while fewer than max_answers did; past that it is refused.
// Counted as submitted, not as open: nghttp2 refuses streams over the advertised limit itself
// (REFUSED_STREAM) while the answered ones are open, but a client resetting each stream it opens
// would otherwise get every one of a long first flight answered.
int on_frame_recv(nghttp2_session* session, const nghttp2_frame* f, void* self) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto& r = refusal_of(self);
  const std::int32_t id = f->hd.stream_id;
  const auto it = r.requests.find(id);
  if (r.answers >= r.max_answers || it == r.requests.end()) {
    if (it != r.requests.end()) r.requests.erase(it);
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  const bool grpc = it->second.grpc;
  const auto head = h2::to_nv(grpc ? r.grpc_head : r.head);
  nghttp2_data_provider provider{};
  provider.read_callback = read_body;
  if (nghttp2_submit_response(session, id, head.data(), head.size(), grpc ? nullptr : &provider) ==
      0) {
    it->second.answered = true;
    ++r.answers;
    r.last_answered = std::max(r.last_answered, id);
  }
  return 0;
}

// A stream closed before its head ended (nghttp2 rejected it, or the client reset it): nothing of
// it is kept. An answered stream keeps its entry for its report.
int on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t, void* self) {
  auto& requests = refusal_of(self).requests;
  if (auto it = requests.find(id); it != requests.end() && !it->second.answered) requests.erase(it);
  return 0;
}

nghttp2_session* new_session(refusal& r) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return nullptr;
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
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
  refusal r;
  r.body = std::string(a.why) + "\n";
  r.max_answers =
      static_cast<std::size_t>(std::max(1, s.listener->cfg.http.max_concurrent_streams));
  r.head = {{":status", std::to_string(a.status)},
            {"content-type", "text/plain"},
            {"content-length", std::to_string(r.body.size())}};
  r.grpc_status = h2::grpc_status_of_http(a.status);
  r.grpc_head = {{":status", "200"}};
  for (auto& field : h2::grpc_reply_fields(r.grpc_status, a.why))
    r.grpc_head.push_back(std::move(field));
  h2::session_ptr h2(new_session(r));
  if (!h2) co_return;
  // The server preface, with the stream limit the normal HTTP/2 path advertises
  // (h2_connection.cpp): a client that read it before its requests sends no more than that at once.
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, static_cast<std::uint32_t>(r.max_answers)}};
  nghttp2_submit_settings(h2.get(), NGHTTP2_FLAG_NONE, settings, 1);
  s.enter(phase::closing, refused_request_wait + std::chrono::seconds(1));
  const auto until = steady::now() + refused_request_wait;
  input_read in;
  bool open = co_await flush(s, tls, h2.get());
  while (open && !r.answered()) {
    open = co_await take_input(s, tls, h2.get(), until, in);
    // What the input asked for (SETTINGS ACK, the answers) goes out as it comes.
    if (open || r.answered()) open = co_await flush(s, tls, h2.get());
  }
  // The last stream processed: the highest one answered, or none (0) when no request came. Not
  // nghttp2's last processed stream, which a stream refused here (past max_answers) would be.
  nghttp2_submit_goaway(h2.get(), NGHTTP2_FLAG_NONE, r.last_answered, a.goaway_code,
                        reinterpret_cast<const std::uint8_t*>(a.why.data()), a.why.size());
  const bool sent = co_await flush(s, tls, h2.get()) && open;
  for (auto& [id, q] : r.requests) {
    if (!q.answered) continue;
    auto& report = answered.emplace_back(std::move(q.report));
    if (report.authority.empty()) report.authority = std::move(q.host);
    // A write that failed leaves the answer's arrival unknown: no response, as anywhere. A gRPC
    // call's line keeps the status its Trailers-Only 200 stands for, with its grpc-status.
    report.status = sent ? a.status : 0;
    report.grpc_status = sent && q.grpc ? r.grpc_status : -1;
    report.resp_bytes = sent ? q.sent : 0;
  }
}

}  // namespace mtlsd::proxy::detail
