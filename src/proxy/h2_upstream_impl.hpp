#pragma once
// Private to h2_upstream.cpp: h2c towards the upstream, one nghttp2 client session over the plain
// upstream connection carrying every stream of one client connection (h2_stream.hpp's upstream).
#include <array>
#include <string>
#include <unordered_map>

#include "h2_session.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {

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
    // The stream's window only: the connection's was given back when data_chunk buffered the
    // bytes (h2_stream.hpp). Not for a response mtlsd made itself (400, 431, 502: the upstream
    // sent none of it): a WINDOW_UPDATE would let the upstream send more than the client took.
    if (s.upstream_id < 0 || s.answered_here) return;
    nghttp2_session_consume_stream(session_.get(), s.upstream_id, n);
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
  // Also from the moment nghttp2's GOAWAY for the upstream's error went out: a stream started
  // then would never be sent.
  bool broken() const override { return broken_ || goaway_received_ || !connection_error_.empty(); }

 private:
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  void lose_connection(const std::string& why);
  // The session is over: nothing more to read nor to write. Once nghttp2 wrote its GOAWAY for
  // a connection error (it takes no frame after one; RFC 9113 5.4.1: the connection closes),
  // or once the upstream's GOAWAY left no stream open.
  bool session_over() const {
    return !nghttp2_session_want_read(session_.get()) &&
           !nghttp2_session_want_write(session_.get());
  }
  // The reason the connection is lost: the write's error, the upstream's connection error, or
  // the read's own (`otherwise`).
  std::string loss_reason(std::string otherwise) const {
    return !write_failed_.empty()       ? write_failed_
           : !connection_error_.empty() ? connection_error_
                                        : otherwise;
  }
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
  // A request's HEADERS went out: nghttp2 no longer holds its head for it, and the upstream
  // may process it. A GOAWAY went out: nghttp2 ends the connection for the upstream's error
  // (goaway_sent).
  void frame_sent(const nghttp2_frame& f) override {
    if (f.hd.type == NGHTTP2_GOAWAY) goaway_sent(f.goaway);
    if (f.hd.type == NGHTTP2_HEADERS && f.headers.cat == NGHTTP2_HCAT_REQUEST)
      if (stream* s = find(f.hd.stream_id)) {
        release_queued(*s);
        s->reached_upstream = true;
      }
  }
  void goaway_sent(const nghttp2_goaway& g);
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
  bool lost_ = false;  // lose_connection ran: every stream failed, the reader stops
  bool goaway_received_ = false;
  std::string write_failed_;  // why a write to the upstream failed ("" while none did)
  // The upstream's HTTP/2 connection error, from nghttp2's GOAWAY ("" while it sent none).
  std::string connection_error_;
};

}  // namespace mtlsd::proxy::h2
