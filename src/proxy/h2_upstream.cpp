// h2c towards the upstream: one nghttp2 client session over the plain upstream connection,
// carrying every stream of one client connection. Headers, DATA, trailers and RST_STREAM pass
// through per stream; each side's flow control is acknowledged only as the other side takes the
// bytes (h2_stream.hpp).
#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <unordered_map>

#include "h2_session.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// Request heads submitted to the upstream's session beyond its SETTINGS_MAX_CONCURRENT_STREAMS:
// nghttp2 holds them (a copy of every field) until a stream slot lets each go, and one the
// client resets meanwhile stays there, marked cancelled, until a slot frees. Without a bound, a
// client could open streams behind a saturated upstream and reset them, freeing its own side,
// for ever (review: +6 MB a batch). Past this, a new stream is refused (REFUSED_STREAM: the
// client may retry it). Each head is charged at least queued_head_charge, so many small ones
// are bounded too. Sixteen largest heads: a burst of streams whose fields HPACK compresses well
// (gRPC metadata) still goes through in one read.
constexpr std::size_t queued_heads_budget = 16 * std::size_t{http_head_limit};
constexpr std::size_t queued_head_charge = 1024;

class h2c_upstream final : public upstream, session_handler {
 public:
  h2c_upstream(downstream& down, stream_socket& sock, const http_forwarding& fwd)
      : down_(down), sock_(sock), forwarding_(fwd), out_(sock.get_executor()) {}

  bool open_session();
  void start(stream_ptr s) override;
  void request_data(stream& s) override {
    if (s.upstream_id >= 0 && s.request_deferred) {
      s.request_deferred = false;
      nghttp2_session_resume_data(session_.get(), s.upstream_id);
    }
    out_.signal();
  }
  void response_consumed(stream& s, std::size_t n) override {
    // Also after the upstream's stream closed: the connection's window still counts it. Not for
    // a response mtlsd made itself (400, 431, 502: the upstream sent none of it): nghttp2 would
    // credit the connection's window with bytes the upstream never sent, and a WINDOW_UPDATE would
    // let it send that much more than the client took.
    if (s.upstream_id < 0 || s.answered_here) return;
    nghttp2_session_consume(session_.get(), s.upstream_id, n);
    out_.signal();
  }
  void cancel(stream& s, std::uint32_t code) override;
  asio::awaitable<void> run() override;
  void stop() override {
    stopped_ = true;
    out_.signal();
    error_code ignored;
    sock_.cancel(ignored);
  }
  bool broken() const override { return broken_ || goaway_received_; }

 private:
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  void lose_connection(const std::string& why);
  stream* find(std::int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  // session_handler, the nghttp2 client session's callbacks: request bodies out (the client
  // may send as much again as went out), responses in.
  outgoing_body outgoing(stream& s) override {
    return {s.request_body, s.request_end, s.request_trailers, s.request_deferred};
  }
  void body_sent(stream& s, std::size_t n) override {
    s.touch();
    down_.request_consumed(s, n);
  }
  bool header(const nghttp2_frame& f, std::string_view name, std::string_view value) override;
  void frame_received(const nghttp2_frame& f) override;
  void data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                  std::size_t len) override;
  void stream_closed(nghttp2_session* session, std::int32_t id, std::uint32_t code) override;
  // A request's HEADERS went out: nghttp2 no longer holds its head for it.
  void frame_sent(const nghttp2_frame& f) override {
    if (f.hd.type == NGHTTP2_HEADERS && f.headers.cat == NGHTTP2_HCAT_REQUEST)
      if (stream* s = find(f.hd.stream_id)) release_queued(*s);
  }
  // A request head too large to send: the close that follows is ours, not a reset. (A head
  // left queued when the upstream said GOAWAY is closed as refused: the upstream never saw it.)
  void frame_not_sent(const nghttp2_frame& f, int lib_error) override {
    if (f.hd.type == NGHTTP2_HEADERS && f.headers.cat == NGHTTP2_HCAT_REQUEST &&
        (lib_error == NGHTTP2_ERR_FRAME_SIZE_ERROR || lib_error == NGHTTP2_ERR_HEADER_COMP))
      unsent_heads_[f.hd.stream_id] = nghttp2_strerror(lib_error);
  }
  void release_queued(stream& s) {
    queued_bytes_ -= s.upstream_queued_bytes;
    s.upstream_queued_bytes = 0;
  }

  downstream& down_;
  stream_socket& sock_;
  const http_forwarding& forwarding_;
  session_ptr session_;
  std::unordered_map<std::int32_t, stream_ptr> streams_;        // by the upstream's stream id
  std::unordered_map<std::int32_t, std::string> unsent_heads_;  // frame_not_sent's, until closed
  std::size_t queued_bytes_ = 0;  // request heads nghttp2 holds unsent (queued_heads_budget)
  write_signal out_;
  std::array<std::uint8_t, 16 * 1024> read_buffer_;
  std::string staging_;
  bool stopped_ = false;
  bool broken_ = false;
  bool goaway_received_ = false;
  std::string write_failed_;  // why a write to the upstream failed ("" while none did)
};

bool h2c_upstream::open_session() {
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, http_head_limit}};  // advisory: header() enforces
  // A client's head of up to http_head_limit, plus XFCC and X-Forwarded-* (64 KiB failed it).
  session_ = make_session(session_side::client, *this, settings, 2 * http_head_limit);
  return session_ != nullptr;
}

void h2c_upstream::start(stream_ptr s) {
  header_list head;
  head.reserve(s->request_headers.size() + 8);
  head.emplace_back(":method", s->method);
  head.emplace_back(":scheme", "http");  // what the upstream connection is
  head.emplace_back(":authority", s->authority);
  head.emplace_back(":path", s->path);
  header_list fields;
  fields.reserve(s->request_headers.size() + 3);
  for (auto& h : s->request_headers)
    if (!is_hop_by_hop(h.first, h.second)) fields.push_back(std::move(h));
  s->request_headers.clear();
  down_.request_fields_taken(*s);
  apply_forwarding(fields, forwarding_);
  for (auto& h : fields)
    head.push_back(std::move(h));
  const auto nv = to_nv(head);
  // Charged only when nghttp2 will hold it back: the upstream's concurrency limit is reached by
  // the streams it has, open or waiting (cancelled ones included, until nghttp2 closes them).
  // Below it, the head leaves on the writer's next turn, and a burst of streams in one read is
  // bounded by http.max_concurrent_streams (review of this bound: charging every head refused
  // bursts of gRPC streams to an upstream with room for them).
  std::size_t charge = 0;
  if (streams_.size() >= nghttp2_session_get_remote_settings(
                             session_.get(), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)) {
    for (const auto& [name, value] : head)
      charge += name.size() + value.size() + 32;
    charge = std::max(charge, queued_head_charge);
  }
  if (charge > 0 && queued_bytes_ + charge > queued_heads_budget) {
    down_.fail(*s, NGHTTP2_REFUSED_STREAM,
               "upstream: the requests waiting for a stream of the h2c upstream (its concurrency "
               "limit) hold too much; refused, the client may retry");
    return;
  }
  const bool no_body = s->request_end && s->request_body.empty() && s->request_trailers.empty();
  const nghttp2_data_provider body = body_provider(*s);
  const std::int32_t id = nghttp2_submit_request(session_.get(), nullptr, nv.data(), nv.size(),
                                                 no_body ? nullptr : &body, nullptr);
  if (id < 0) {
    down_.fail(*s, NGHTTP2_INTERNAL_ERROR,
               std::string("upstream: submitting the request: ") + nghttp2_strerror(id));
    return;
  }
  s->upstream_id = id;
  s->upstream_queued_bytes = charge;
  queued_bytes_ += charge;
  streams_.emplace(id, std::move(s));
  out_.signal();
}

void h2c_upstream::cancel(stream& s, std::uint32_t code) {
  // Response bytes the client will never take still count against the connection's window;
  // not mtlsd's own answer's (a 502: the upstream sent none of it), as in response_consumed.
  if (s.upstream_id >= 0 && !s.answered_here && !s.response_body.empty())
    nghttp2_session_consume(session_.get(), s.upstream_id, s.response_body.size());
  s.response_body = {};
  if (s.upstream_id < 0 || !streams_.count(s.upstream_id)) return;
  // The client reset its stream, or its stream ended before the upstream's: pass it on.
  nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.upstream_id,
                            code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_CANCEL} : code);
  out_.signal();
}

bool h2c_upstream::header(const nghttp2_frame& f, std::string_view name,
                          std::string_view value_in) {
  stream* s = find(f.hd.stream_id);
  if (!s || f.hd.type != NGHTTP2_HEADERS || s->upstream_done()) return true;
  // Counted before anything is copied, per header list (each head, 1xx or final, and the
  // trailers): HPACK lets one byte from the upstream name a field already in its table (a 4 KiB
  // one, say), so one 16 KiB frame could decode to 64 MB. Past the limit the upstream's stream
  // is reset and the client's gets a 502 (or, its response begun, a reset).
  if (name == ":status") {  // the first field of every head
    s->upstream_head_bytes = 0;
    // nghttp2 checks three digits and holds back 1xx; 000-099 it takes for a final head, which
    // this side would take for an interim one and never pass on (the client's stream then had
    // no answer until stream_idle_timeout: h2_upstream_fuzz). No status at all (RFC 9110 15).
    if (value_in.empty() || value_in[0] == '0') {
      s->detail = "upstream: response status " + std::string(value_in) + " is not a status";
      return false;  // reset, as a head over the limit
    }
    if (!value_in.empty() && value_in[0] == '1' &&
        ++s->upstream_interim_heads > http_interim_limit) {
      s->detail =
          "upstream: more than " + std::to_string(http_interim_limit) + " interim (1xx) responses";
      return false;  // reset, as a head over the limit
    }
  }
  std::size_t& counted =
      s->final_head_received ? s->upstream_trailer_bytes : s->upstream_head_bytes;
  counted += name.size() + value_in.size() + 32;  // RFC 9113 6.5.2's accounting
  if (counted > http_head_limit) {
    s->detail = std::string("upstream: response ") +
                (s->final_head_received ? "trailers" : "header list") + " over " +
                std::to_string(http_head_limit) + " bytes";
    return false;
  }
  std::string value(value_in);
  // For the access line: an RPC's outcome rides in its trailers (or, with no message sent, in
  // a Trailers-Only response head) while :status says 200 either way.
  if (name == "grpc-status") s->grpc_status = parse_grpc_status(value);
  // A HEADERS frame after the final head's carries the trailers. Not told by the frame's
  // category: nghttp2 gives the final head HCAT_HEADERS too when a 1xx came before it.
  if (s->final_head_received) {
    s->response_trailers.emplace_back(std::string(name), std::move(value));
  } else if (name == ":status") {
    int status = 0;
    std::from_chars(value.data(), value.data() + value.size(), status);
    s->status = status;
    s->response_headers.clear();
  } else if (!is_hop_by_hop(name, value)) {
    s->response_headers.emplace_back(std::string(name), std::move(value));
  }
  return true;
}

void h2c_upstream::frame_received(const nghttp2_frame& f) {
  // The upstream is going away (a restart, a maximum connection age): streams above the last
  // one it names are closed by nghttp2 with REFUSED_STREAM, new ones are not sent to it, and
  // the client is asked to reconnect.
  if (f.hd.type == NGHTTP2_GOAWAY) {
    goaway_received_ = true;
    down_.upstream_closing();
    return;
  }
  if (f.hd.type != NGHTTP2_HEADERS && f.hd.type != NGHTTP2_DATA) return;
  stream* s = find(f.hd.stream_id);
  if (!s || s->upstream_done()) return;
  const bool end = (f.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f.hd.type == NGHTTP2_HEADERS && !s->final_head_received) {
    if (s->status < 200) {  // 100, 103: the final head follows; not passed on
      s->status = 0;
      s->response_headers.clear();
      return;
    }
    s->final_head_received = true;
    if (end) s->response_end = true;
    down_.respond(*s);
    return;
  }
  if (end) {
    s->response_end = true;
    down_.response_data(*s);
  }
}

void h2c_upstream::data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                              std::size_t len) {
  stream* s = find(id);
  if (!s || s->upstream_done()) {
    nghttp2_session_consume(session, id, len);
    return;
  }
  s->response_body.append(data, len);
  down_.response_data(*s);
}

void h2c_upstream::stream_closed(nghttp2_session*, std::int32_t id, std::uint32_t code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  stream_ptr s = std::move(it->second);
  streams_.erase(it);
  release_queued(*s);
  const auto unsent = unsent_heads_.extract(id);
  if (s->upstream_done()) return;
  if (!unsent.empty())  // never reached the upstream: a 502 of ours, not a retryable refusal
    down_.fail(*s, NGHTTP2_INTERNAL_ERROR,
               "upstream: the request head was not sent: " + unsent.mapped());
  else if (code != NGHTTP2_NO_ERROR || !s->response_end)
    down_.fail(*s, code, std::string("upstream reset the stream: ") + nghttp2_http2_strerror(code));
  else if (!s->request_end)  // answered in full before the upload ended (RFC 9113 8.1)
    down_.upload_unwanted(*s);
}

void h2c_upstream::lose_connection(const std::string& why) {
  broken_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  queued_bytes_ = 0;
  // Whether the upstream processed these is unknown (unlike streams above a GOAWAY's last
  // one): a 502, not a refusal a client would retry.
  for (auto& [id, s] : streams)
    if (!s->closed) down_.fail(*s, NGHTTP2_INTERNAL_ERROR, "upstream: " + why);
  down_.upstream_closing();
}

asio::awaitable<void> h2c_upstream::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  while (!stopped_) {
    auto [ec, n] =
        co_await sock_.async_read_some(asio::buffer(read_buffer_), as_tuple(use_awaitable));
    if (stopped_) break;
    if (ec) {
      // After a failed write, the end of what the upstream had sent (the writer's shutdown
      // below): the write's error is the reason.
      lose_connection(!write_failed_.empty()   ? write_failed_
                      : ec == asio::error::eof ? std::string("the h2c connection closed")
                                               : "reading: " + ec.message());
      break;
    }
    const auto rv = nghttp2_session_mem_recv(session_.get(), read_buffer_.data(), n);
    out_.signal();
    if (rv < 0) {
      lose_connection(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
      break;
    }
  }
  out_.signal();
}

asio::awaitable<void> h2c_upstream::writer() {
  co_await asio::this_coro::throw_if_cancelled(false);
  while (!stopped_ && !broken_) {
    out_.reset();
    staging_.clear();
    if (int rv = collect_output(session_.get(), staging_, write_batch); rv != 0) {
      lose_connection(std::string("HTTP/2: ") + nghttp2_strerror(rv));
      break;
    }
    if (staging_.empty()) {
      co_await out_.wait();
      continue;
    }
    auto [ec, n] =
        co_await asio::async_write(sock_, asio::buffer(staging_), as_tuple(use_awaitable));
    if (ec) {
      if (!stopped_) {
        write_failed_ = "writing: " + ec.message();
        broken_ = true;            // no new stream for this connection,
        down_.upstream_closing();  // and the client told so (GOAWAY), as lose_connection does
      }
      break;
    }
  }
  error_code ignored;
  if (write_failed_.empty()) {
    sock_.cancel(ignored);  // the reader stops too
  } else {
    // An upstream that answered in full and then closed (a request body it did not want) makes
    // the write fail, and that can come before the reader has taken the answer's last frames off
    // the socket: failing the streams now reset a whole response (INTERNAL_ERROR, which the
    // client takes as discarding it; seen once in a CI run).
    // The reader reads what the socket holds, then ends: after SHUT_RD a read that finds no
    // queued bytes returns the end instead of waiting, on TCP and unix sockets alike.
    sock_.shutdown(stream_socket::shutdown_receive, ignored);
  }
}

asio::awaitable<void> h2c_upstream::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (reader() && writer());
  error_code ignored;
  sock_.shutdown(stream_socket::shutdown_send, ignored);
}

}  // namespace

std::unique_ptr<upstream> make_h2c_upstream(downstream& down, stream_socket& sock,
                                            const http_forwarding& forwarding) {
  auto u = std::make_unique<h2c_upstream>(down, sock, forwarding);
  if (!u->open_session()) throw std::runtime_error("nghttp2: could not create a client session");
  return u;
}

}  // namespace mtlsd::proxy::h2
