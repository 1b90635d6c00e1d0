#pragma once
// The HTTP/1.1 relay's I/O pieces (http_relay.cpp): each side of the connection as a Beast
// stream (the TLS client, the plain upstream), the inbound message state, and the loops that
// write what a serializer has ready and stream a body through one fixed chunk. Internal to
// src/proxy; only http_connection.hpp includes it.
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <string>
#include <vector>

#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::http1 {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;

// Read buffers hold at most one message head plus one body chunk of look-ahead.
constexpr std::size_t read_buffer_limit = http_head_limit + http_body_chunk;

inline bool is_http_error(const error_code& ec) {
  return &ec.category() == &http::make_error_code(http::error::need_more).category();
}

inline bool cancelled(const error_code& ec) {
  return ec == asio::error::operation_aborted;
}

// The TLS client's side of the connection.
class tls_side {
 public:
  tls_side(tls_stream& tls, stream_socket& sock) : tls_(tls), sock_(sock) {}

  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    return tls_.read_some(b);
  }
  // One TLS write per call: the pieces a serializer hands out (chunk size, data, CRLF...) are
  // gathered first, or each would become a record of its own. Between hold() and release()
  // writes are only gathered.
  asio::awaitable<error_code> write(const std::vector<asio::const_buffer>& bufs) {
    if (bufs.size() == 1 && !held_) co_return co_await tls_.write(bufs.front());
    if (!held_) staging_.clear();
    for (const auto& b : bufs)
      staging_.append(static_cast<const char*>(b.data()), b.size());
    if (held_) co_return error_code{};
    co_return co_await tls_.write(asio::buffer(staging_));
  }
  asio::awaitable<error_code> write(std::string_view s) {
    if (held_) {
      staging_.append(s);
      co_return error_code{};
    }
    co_return co_await tls_.write(asio::buffer(s.data(), s.size()));
  }
  // A response whose body is already in the upstream's read buffer goes out as one record and one
  // write, head and body together (as nginx sends it), instead of one each: a syscall and a
  // record less per small response. Only for bytes already read: no write waits on a read.
  void hold() {
    staging_.clear();
    held_ = true;
  }
  // Forgets what is held (the exchange failed before release()).
  void drop_held() {
    if (held_) staging_.clear();
    held_ = false;
  }
  asio::awaitable<error_code> release() {
    if (!held_) co_return error_code{};
    held_ = false;
    if (staging_.empty()) co_return error_code{};
    co_return co_await tls_.write(asio::buffer(staging_));
  }
  // close_notify, then FIN.
  asio::awaitable<void> close() {
    co_await tls_.shutdown_send();
    error_code ignored;
    sock_.shutdown(stream_socket::shutdown_send, ignored);
  }

 private:
  tls_stream& tls_;
  stream_socket& sock_;
  std::string staging_;  // one message head or one body chunk plus framing; held: head + body,
                         // both already in the upstream's read buffer (read_buffer_limit)
  bool held_ = false;
};

// The upstream's side: a plain socket.
class plain_side {
 public:
  explicit plain_side(stream_socket& sock) : sock_(sock) {}

  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    auto [ec, n] = co_await sock_.async_read_some(b, as_tuple(use_awaitable));
    co_return std::pair{ec, n};
  }
  asio::awaitable<error_code> write(const std::vector<asio::const_buffer>& bufs) {
    auto [ec, n] = co_await asio::async_write(sock_, bufs, as_tuple(use_awaitable));
    co_return ec;
  }
  asio::awaitable<error_code> write(std::string_view s) {
    auto [ec, n] = co_await asio::async_write(sock_, asio::buffer(s.data(), s.size()),
                                              as_tuple(use_awaitable));
    co_return ec;
  }
  void close() {
    error_code ignored;
    sock_.shutdown(stream_socket::shutdown_send, ignored);
  }

 private:
  stream_socket& sock_;
};

// One side's incoming bytes: a bounded read buffer and the parse step that fills it.
template <class Side>
struct inbound {
  inbound(Side& s, std::uint64_t& c, idle_deadline& k) : side(s), counter(c), clock(k) {}

  Side& side;
  std::uint64_t& counter;  // bytes read from this side (the access log's rx or tx)
  idle_deadline& clock;
  beast::flat_buffer buf{read_buffer_limit};

  // One step of the parser, as beast::http::read_some takes it: parse what is buffered, read
  // more only when the parser needs more. Returns success once the parser made progress,
  // need_buffer when the body buffer is full, end_of_stream at EOF before any byte.
  template <bool isRequest>
  asio::awaitable<error_code> step(http::basic_parser<isRequest>& p) {
    error_code ec;
    if (buf.size() > 0) {
      buf.consume(p.put(buf.data(), ec));
      if (ec != http::error::need_more) co_return ec;
    }
    for (;;) {
      const std::size_t size = beast::read_size(buf, 65536);
      if (size == 0) co_return http::error::buffer_overflow;
      auto [rec, n] = co_await side.read_some(buf.prepare(size));
      if (rec == asio::error::eof) {
        if (!p.got_some()) co_return http::error::end_of_stream;
        error_code eec;
        p.put_eof(eec);
        co_return eec;
      }
      if (rec) co_return rec;
      buf.commit(n);
      counter += n;
      clock.touch();
      ec = {};
      buf.consume(p.put(buf.data(), ec));
      if (ec != http::error::need_more) co_return ec;
    }
  }

  template <bool isRequest>
  asio::awaitable<error_code> head(http::basic_parser<isRequest>& p) {
    while (!p.is_header_done())
      if (auto ec = co_await step(p)) co_return ec;
    co_return error_code{};
  }

  // Gives a large head's memory back once it is gone (keep-alive connections live long).
  void trim() {
    if (buf.size() == 0 && buf.capacity() > 2 * http_body_chunk) buf.shrink_to_fit();
  }
};

// Writes what a serializer has ready — until it needs more body (need_buffer) or is done, or,
// with `head_only`, once the head is out.
template <class Side, bool isRequest>
asio::awaitable<error_code> write_ready(Side& side,
                                        http::serializer<isRequest, http::buffer_body>& sr,
                                        std::vector<asio::const_buffer>& scratch, bool head_only) {
  for (;;) {
    if (sr.is_done() || (head_only && sr.is_header_done())) co_return error_code{};
    error_code ec;
    scratch.clear();
    sr.next(ec, [&](error_code&, const auto& buffers) {
      for (auto b : beast::buffers_range_ref(buffers))
        if (b.size() > 0) scratch.push_back(b);
    });
    if (ec == http::error::need_buffer) co_return error_code{};
    if (ec) co_return ec;
    std::size_t n = 0;
    for (const auto& b : scratch)
      n += b.size();
    if (n > 0)
      if (auto wec = co_await side.write(scratch)) co_return wec;
    sr.consume(n);
  }
}

// Where a body transfer stopped: reading from the source or writing to the sink.
struct body_outcome {
  error_code ec;
  bool reading = false;
};

// Streams a message body from `in` to `out` through one fixed buffer: read what fits, write
// it, repeat. Memory stays at one chunk whatever the body's length or framing.
template <class In, class Out, bool isRequest>
asio::awaitable<body_outcome> stream_body(In& in, Out& out,
                                          http::parser<isRequest, http::buffer_body>& p,
                                          http::serializer<isRequest, http::buffer_body>& sr,
                                          std::array<char, http_body_chunk>& chunk,
                                          std::vector<asio::const_buffer>& scratch,
                                          std::uint64_t& body_bytes) {
  auto& body = p.get().body();
  while (!p.is_done()) {
    body.data = chunk.data();
    body.size = chunk.size();
    auto ec = co_await in.step(p);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return body_outcome{ec, true};
    const std::size_t n = chunk.size() - body.size;
    body_bytes += n;
    if (n == 0 && !p.is_done()) continue;  // e.g. only a chunk header was parsed
    // A zero-length piece with more=true would end a chunked body early: only the last piece
    // may be empty (it then writes the terminating chunk).
    body.data = n ? chunk.data() : nullptr;
    body.size = n;
    body.more = !p.is_done();
    if (auto wec = co_await write_ready(out, sr, scratch, false))
      co_return body_outcome{wec, false};
  }
  co_return body_outcome{};
}

inline std::string simple_response(int status, std::string_view reason, std::string_view text) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out.append(reason);
  out += "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(text.size() + 1) +
         "\r\nConnection: close\r\n\r\n";
  out.append(text);
  return out + "\n";
}

}  // namespace mtlsd::proxy::http1
