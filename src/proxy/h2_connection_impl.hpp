#pragma once
// Private to h2_connection*.cpp: the client's side of one HTTP/2 connection, an nghttp2 server
// session over the TLS stream. h2_connection.cpp holds the session's handler (frames in,
// responses out), h2_connection_io.cpp the read and write loops around them.
#include <array>
#include <boost/asio/steady_timer.hpp>
#include <unordered_map>

#include "h2_session.hpp"
#include "mtlsd/proxy/h2_connection.hpp"
#include "mtlsd/proxy/h2_header_blocks.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {

constexpr auto goaway_grace = std::chrono::seconds(1);  // bound on the GOAWAY's write when killed
constexpr std::size_t write_piece = 16 * 1024;          // one TLS record's plaintext
// Frames nghttp2 may hold for a client whose writes wait before the reader stops reading.
constexpr std::size_t output_backlog = 256;
// Decoded request header and trailer fields the open streams of a connection may hold until
// the upstream takes them (a stream queued for an upstream place holds its own): four whole
// heads. A stream past it is refused (REFUSED_STREAM: the client may retry it), its
// trailers reset. HPACK lets a client name a 4 KiB field with one byte, so without it a few KB
// sent held 64 KiB of head and 64 KiB of trailers per stream queued for an upstream place, 12
// MiB a connection (review).
constexpr std::size_t held_fields_budget = 4 * std::size_t{http_head_limit};
// Rapid reset (CVE-2023-44487): a client that resets streams as soon as it opens them makes the
// proxy do a request's work for each while it pays for two small frames. A reset is premature
// when the stream's response had not begun and it was younger than premature_reset_lifetime
// (Envoy's measure); a connection whose premature resets reach http.max_premature_resets and
// outnumber the responses its upstream gave is closed with GOAWAY(ENHANCE_YOUR_CALM). Counting
// the upstream's responses, not all streams, leaves no cheap way around it (streams mtlsd
// answers itself, a 400 say, cost a client nothing); it spares a long-lived client that cancels
// some of its requests (deadlines, hedging), and the floor a short burst of cancellations.
// A reset nghttp2 sends itself counts the same (MadeYouReset, CVE-2025-8671): the client's own
// frames broke the stream (DATA past its content-length, a bad header, its window overrun), so
// the client chose that end as surely as with an RST_STREAM of its own, and Debian's nghttp2
// (1.52) does not bound such resets.
constexpr auto premature_reset_lifetime = std::chrono::seconds(1);
// nghttp2's own bound on the resets a client sends (NGHTTP2_DEFAULT_STREAM_RESET_BURST, not in
// its headers): its GOAWAY comes after at least this many (goaway_sent).
constexpr std::uint64_t nghttp2_reset_burst = 1000;

class connection final : public downstream, session_handler {
 public:
  explicit connection(h2_environment env)
      : env_(std::move(env)),
        ex_(env_.client_socket->get_executor()),
        out_(ex_),
        written_(ex_),
        sweep_timer_(ex_, steady::time_point::max()) {}

  asio::awaitable<void> run();

  // downstream
  void respond(stream& s) override;
  void response_data(stream& s) override;
  void request_consumed(stream& s, std::size_t n) override {
    // The stream's window only: the connection's was given back when data_chunk buffered the
    // bytes (h2_stream.hpp).
    nghttp2_session_consume_stream(session_.get(), s.id, n);
    out_.signal();
  }
  void request_fields_taken(stream& s) override {
    held_fields_ -= s.held_fields;
    s.held_fields = 0;
  }
  void fail(stream& s, std::uint32_t code, std::string detail) override;
  void upload_unwanted(stream& s) override;
  void upstream_closing() override;
  void goaway_for_upstream();  // the GOAWAY upstream_closing() promised, once

  // For fuzz/h2_frames_fuzz.cpp: the nghttp2 session with these callbacks and `up` as the
  // upstream, fed bytes directly (no I/O loops); feed() returns nghttp2's verdict and drops
  // what the session would send.
  bool open_for_fuzzing(std::unique_ptr<upstream> up) {
    upstream_ = std::move(up);
    return open_session();
  }
  long feed(const std::uint8_t* data, std::size_t size) {
    header_blocks_.feed(data, size);
    const auto rv = nghttp2_session_mem_recv(session_.get(), data, size);
    staging_.clear();
    const int out = collect_output(session_.get(), staging_, SIZE_MAX);
    return rv < 0 ? static_cast<long>(rv) : out;
  }

 private:
  bool open_session();
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> sweeper();
  bool client_took_bytes();
  asio::awaitable<void> loops();
  asio::awaitable<void> goodbye();
  void drain();
  // The last stream mtlsd took, for a GOAWAY that ends the connection now: nghttp2's last
  // processed one, but not a stream whose header block is still open (nghttp2 counts it from the
  // block's first byte; it was never taken, and the client may send it again elsewhere).
  std::int32_t last_taken_stream() const {
    return header_blocks_.in_header_block()
               ? last_whole_head_
               : nghttp2_session_get_last_proc_stream_id(session_.get());
  }
  // The client's GOAWAY: the connection ends as the client's doing (termination client_close).
  void client_goaway(const nghttp2_goaway& g);
  // A GOAWAY went out: one of nghttp2's for the client's connection error, or for its own bound
  // on the client's resets, is recorded as the connection's failure.
  void goaway_sent(const nghttp2_goaway& g);
  void stop() {
    stopping_ = true;
    out_.signal();
    written_.signal();
    sweep_timer_.cancel();
    error_code ignored;
    env_.client_socket->cancel(ignored);
  }
  stream* find(std::int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }
  void start(stream& s);
  // RST_STREAM(REFUSED_STREAM): the upstream never processed the request (RFC 9113 8.7), so
  // the client may send it again, on a new connection.
  void refuse_stream(stream& s, std::string detail);
  // http.stream_idle_timeout passed on `s`: answered 408 or 504 (a HEADERS frame alone;
  // Trailers-Only to gRPC) if its response has not begun, refused (REFUSED_STREAM) if it never
  // reached the upstream and the client was not the one holding it back, else reset with CANCEL.
  void stream_idle(stream& s, std::string detail);
  void report(stream& s, std::uint32_t code);
  void local_failure(std::string why) {
    env_.result->ended_by(relay_end::local);
    if (env_.result->aborted) return;
    env_.result->aborted = true;
    env_.result->error = std::move(why);
  }

  // session_handler: the nghttp2 server session's callbacks (requests in, responses out).
  void begin_headers(const nghttp2_frame& f) override;
  bool header(const nghttp2_frame& f, std::string_view name, std::string_view value) override;
  void frame_received(const nghttp2_frame& f) override;
  void data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                  std::size_t len) override;
  void stream_closed(nghttp2_session* session, std::int32_t id, std::uint32_t code) override;
  // Stream `id` ended by a reset the client sent, or one nghttp2 sent because of the client's
  // frames (frame_sent): counts premature resets and ends the connection past the rapid-reset
  // bound.
  void client_reset(std::int32_t id);
  // mtlsd's own RST_STREAM for `s` (refused, failed, idle, upload not wanted): no premature
  // reset of the client's.
  void reset_here(stream& s, std::uint32_t code);
  void frame_sent(const nghttp2_frame& f) override;
  // The response is out and the rest of the request is not wanted: RST_STREAM(NO_ERROR).
  void stop_upload_if_done(stream& s);
  outgoing_body outgoing(stream& s) override {
    return {s.response_body, s.response_end, s.response_trailers, s.response_deferred};
  }
  void body_sent(stream& s, std::size_t n) override;

  h2_environment env_;
  asio::any_io_executor ex_;
  session_ptr session_;
  std::unique_ptr<upstream> upstream_;
  std::unordered_map<std::int32_t, stream_ptr> streams_;
  write_signal out_;
  write_signal written_;  // the writer finished a write: the reader looks at the backlog again
  asio::steady_timer sweep_timer_;
  // Whether the client is inside a header block (HEADERS, then CONTINUATION frames). While it
  // is, no other frame may come on the connection (RFC 9113 6.10), so one left open across
  // reads starts http.request_headers_timeout for the whole connection, as an HTTP/1.1 head
  // does (reader()).
  header_block_scan header_blocks_;
  std::array<std::uint8_t, 16 * 1024> read_buffer_;
  std::string staging_;
  // A write to the client is under way. Meanwhile neither the client's frames nor open streams
  // move the idle deadline; only the write's progress does: a piece written (write_piece), or
  // bytes the client took off the socket's queue (client_took_bytes). A client that stops
  // reading while it keeps the connection busy otherwise (WINDOW_UPDATEs, PINGs, streams that
  // cannot finish because their RST_STREAM is never written) then still meets timeouts.idle,
  // as nginx's send_timeout bounds a stuck write; one that reads, however slowly, keeps it.
  bool writing_ = false;
  std::size_t held_fields_ = 0;  // decoded request fields kept by open streams (held_fields_budget)
  int queued_seen_ = -1;         // the socket's unacknowledged bytes at the sweeper's last look
  bool stopping_ = false;
  bool client_done_ = false;       // the reader saw the client's end (EOF) or an error: no linger
  bool upstream_closing_ = false;  // the h2c upstream takes no new stream: GOAWAY when idle
  bool goaway_for_upstream_sent_ = false;
  std::uint64_t streams_opened_ = 0;     // request streams the client began
  std::uint64_t upstream_answered_ = 0;  // of them, answered by the upstream (a final head)
  std::uint64_t premature_resets_ = 0;   // reset by the client prematurely
  bool rapid_reset_ = false;             // closed for it: the reader takes nothing more
  std::uint64_t resets_received_ = 0;    // RST_STREAM frames the client sent (any stream)
  std::int32_t last_whole_head_ = 0;     // the last request stream whose header block ended
  // A GOAWAY with an error code went out (nghttp2's, for the client's connection error or a
  // flood it stopped) or came in (the client's): the connection failed, but its close stays
  // graceful (close_notify, FIN, the client's bytes read and discarded until it closes, within
  // timeouts.half_close) so that the GOAWAY is read, not lost to a reset.
  bool goaway_with_error_ = false;
};

}  // namespace mtlsd::proxy::h2
