#pragma once
// Private to h2_*.cpp: one HTTP/2 request/response as it passes mtlsd, and the two interfaces
// between the downstream connection (h2_connection.cpp, nghttp2 server session over TLS) and
// what serves its streams upstream (h2_upstream.cpp: an h2c client session; h2_h1_exchange.cpp:
// one HTTP/1.1 exchange per stream).
//
// Bodies pass through bounded buffers, flow control split as nginx splits it (its per-stream
// preread): a DATA chunk gives its bytes back to the connection's window as soon as its stream
// buffered it (nghttp2_session_consume_connection), and to its stream's window only once the
// other side took them (nghttp2_session_consume_stream; the upstream side for request body, the
// client side for response body). A slow reader on either end stops that stream's sender, and
// a stream that cannot move (waiting for an HTTP/1.1 upstream place, or behind an h2c
// upstream's concurrency limit) holds its own window, never the connection's: before, 16 such
// streams held a 1 MiB connection window whole and every stream of the connection stalled
// (review). Memory stays within the stream windows: 64 KiB (nghttp2's default initial window,
// which both sessions keep) per open stream, at most http.max_concurrent_streams of them.
#include <nghttp2/nghttp2.h>

#include <prometheus/counter.h>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "mtlsd/config/config.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"

namespace mtlsd::proxy::h2 {

using steady = std::chrono::steady_clock;

// A FIFO of body bytes: appended at the back, taken from the front.
struct byte_queue {
  std::string data;
  std::size_t offset = 0;
  std::size_t size() const { return data.size() - offset; }
  bool empty() const { return size() == 0; }
  void append(const std::uint8_t* p, std::size_t n) {
    // What was taken goes once it outweighs what is left (the bytes moved never outnumber those
    // dropped), so the string holds about twice the flow-control window, not all of a long
    // body whose reader never quite empties the queue.
    if (offset > 0 && offset >= size()) data.erase(0, offset), offset = 0;
    data.append(reinterpret_cast<const char*>(p), n);
  }
  // Copies up to `n` bytes to `out`; returns how many.
  std::size_t take(std::uint8_t* out, std::size_t n) {
    n = std::min(n, size());
    std::copy_n(data.data() + offset, n, out);
    offset += n;
    if (offset == data.size()) data.clear(), offset = 0;
    return n;
  }
};

// gRPC status codes are 0-16; anything else (a malformed or future value) is kept if it is a
// small number, else read as none: the access line never carries the upstream's raw text.
inline int parse_grpc_status(std::string_view value) {
  int code = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), code);
  if (ec != std::errc{} || end != value.data() + value.size() || value.size() > 3) return -1;
  return code;
}

struct stream {
  explicit stream(std::int32_t sid, const asio::any_io_executor& ex)
      : id(sid), wake(ex, steady::time_point::max()) {}

  std::int32_t id;
  // The request, as the client sent it (lower-case names, pseudo-headers apart).
  std::string method, scheme, authority, path;
  header_list request_headers;
  std::size_t header_bytes = 0;   // for the header size limit: the request head's fields
  std::size_t trailer_bytes = 0;  // ... and its trailers', counted on their own
  bool head_too_large = false;
  std::size_t held_fields = 0;      // its share of the connection's held_fields_
  bool over_fields_budget = false;  // its head did not fit the connection's budget: refused
  header_list request_trailers;
  // Its content-type names gRPC: mtlsd's own answers to it are Trailers-Only (grpc_reply.hpp).
  bool grpc = false;
  // mtlsd answered it so: `:status` 200 on the wire, `status` the HTTP status it stands for.
  bool trailers_only_reply = false;
  byte_queue request_body;
  bool request_end = false;  // the client ended its side (END_STREAM)

  // The response, as the upstream sends it.
  int status = 0;
  // The grpc-status sent: the h2c upstream's (trailers or Trailers-Only), or mtlsd's own answer's
  // to a gRPC call; -1: none.
  int grpc_status = -1;
  bool final_head_received = false;  // h2c: the final (non-1xx) head's HEADERS frame is in
  // h2c: decoded bytes of the upstream's current head and of its trailers (RFC 9113 6.5.2).
  std::size_t upstream_head_bytes = 0;
  std::size_t upstream_trailer_bytes = 0;
  int upstream_interim_heads = 0;  // h2c: 1xx heads so far (http_interim_limit)
  header_list response_headers;
  header_list response_trailers;
  byte_queue response_body;
  bool response_started = false;   // submitted to the client
  bool response_end = false;       // nothing more will be appended
  bool response_deferred = false;  // the client side's data source waits for more

  bool answered_here = false;     // mtlsd answered (431, 405, 502, 408, 504): upstream_done
  bool upload_unwanted = false;   // h2c: the upstream reset its stream with NO_ERROR after the
                                  // whole response: the rest of the request is not wanted
  bool response_sent = false;     // the client got the response's END_STREAM
  bool closed = false;            // the client's stream is closed: the upstream side stops
  bool reset_here = false;        // mtlsd submitted its RST_STREAM (connection::reset_here)
  std::int32_t upstream_id = -1;  // h2c: the upstream's stream
  std::size_t upstream_queued_bytes = 0;  // h2c: its request head, held by nghttp2 until sent
  bool request_deferred = false;          // h2c: the upstream's data source waits for more body
  // Its request head went to the upstream (written to an HTTP/1.1 connection, or its HEADERS
  // frame sent on the h2c one). Before, the upstream cannot have processed it: a stream idle
  // timeout refuses it (REFUSED_STREAM, which a client may retry) rather than answer 504.
  bool reached_upstream = false;
  asio::steady_timer wake;  // HTTP/1.1 exchange: something above changed

  std::uint64_t req_bytes = 0, resp_bytes = 0;
  steady::time_point started = steady::now();
  steady::time_point last_activity = started;
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();
  std::string detail;  // why it failed, for the access line

  void touch() { last_activity = steady::now(); }
  // Whether the upstream side is done with it: the client's stream closed, or mtlsd answered it
  // itself (a refusal, a 502, a stream idle timeout's 408/504). Nothing more of the request goes
  // up, nothing more of the upstream's response is taken.
  bool upstream_done() const { return closed || answered_here; }
};

using stream_ptr = std::shared_ptr<stream>;

// What the downstream connection offers to whatever serves its streams.
class downstream {
 public:
  virtual ~downstream() = default;
  // status, response_headers set: send the response head (and then the body as it comes).
  virtual void respond(stream& s) = 0;
  // More response body, its end, or trailers were buffered.
  virtual void response_data(stream& s) = 0;
  // The upstream took `n` bytes of request body: the client may send as many more.
  virtual void request_consumed(stream& s, std::size_t n) = 0;
  // The upstream took the request's head (its fields are gone from the stream): they no longer
  // count against the connection's budget of held fields.
  virtual void request_fields_taken(stream& s) = 0;
  // The upstream failed the stream: a 502 when no response was sent yet, else RST_STREAM
  // with `code`.
  virtual void fail(stream& s, std::uint32_t code, std::string detail) = 0;
  // The upstream has the whole request it wants (s.upload_unwanted): once the response is out,
  // the client is asked to stop sending.
  virtual void upload_unwanted(stream& s) = 0;
  // h2c: the upstream takes no new stream (it sent GOAWAY, or its connection is gone). The
  // client is sent GOAWAY(NO_ERROR) so that it opens a new connection (a new upstream one with
  // it); the streams already taken finish.
  virtual void upstream_closing() = 0;
};

// What serves the requests of one downstream connection.
class upstream {
 public:
  virtual ~upstream() = default;
  // The request head is complete (the body may follow).
  virtual void start(stream_ptr s) = 0;
  // More request body, its end or trailers were buffered.
  virtual void request_data(stream& s) = 0;
  // The client side took `n` bytes of response body.
  virtual void response_consumed(stream& s, std::size_t n) = 0;
  // The client's stream closed (completed or reset) with `code`: stop serving it.
  virtual void cancel(stream& s, std::uint32_t code) = 0;
  // Runs the upstream side's I/O until stop(); returns once nothing refers to the connection.
  virtual asio::awaitable<void> run() = 0;
  virtual void stop() = 0;
  // h2c: the upstream takes no new stream (GOAWAY received, or the connection is gone): new
  // streams are refused with REFUSED_STREAM, which the client may retry elsewhere.
  virtual bool broken() const { return false; }
};

// The upstream sides, made by h2_upstream.cpp and h2_h1_exchange.cpp.
std::unique_ptr<upstream> make_h2c_upstream(downstream& down, stream_socket& sock,
                                            const http_forwarding& forwarding);
// `preamble`: what every connection the HTTP/1.1 side opens itself sends before its first
// request (the session's PROXY v2 header; `first` was sent it already), "" = nothing.
// `connect_failures`: incremented for each of those connections that fails, as the session's
// own (not when mtlsd is out of descriptors); may be null.
std::unique_ptr<upstream> make_h1_upstream(downstream& down, stream_socket& first,
                                           const config::listener& cfg,
                                           const http_forwarding& forwarding,
                                           const std::string& preamble,
                                           prometheus::Counter* connect_failures);

// Wakes a coroutine waiting for something to write: signal() before wait() is not lost.
class write_signal {
 public:
  explicit write_signal(const asio::any_io_executor& ex) : timer_(ex, steady::time_point::max()) {}
  void signal() {
    pending_ = true;
    timer_.cancel();
  }
  asio::awaitable<void> wait();
  // Clears the pending flag: call before collecting what to write.
  void reset() { pending_ = false; }

 private:
  asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace mtlsd::proxy::h2
