#pragma once
// Parses an upstream's HTTP/1.1 response body into a Beast parser's buffer_body a step at a
// time, as Beast's http::async_read_some would (the HTTP/2 client's side of an HTTP/1.1
// upstream reads responses with it: h2_h1_exchange.cpp). Not Beast's own: Boost 1.81's asserts
// (a debug or ASan build aborts, every client of the daemon with it) when a body begins with its
// last chunk and "0\r\n" is followed by fewer than five bytes (boostorg/beast#2861). As
// framing_base::put_body does in HTTP/1.1 mode, that call waits for more bytes: no whole body
// ends in fewer than five bytes from there.
#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstdint>
#include <functional>

#include "mtlsd/net/socket.hpp"

namespace mtlsd::proxy {

class response_body_reader {
 public:
  using parser = boost::beast::http::response_parser<boost::beast::http::buffer_body>;
  // `p` has parsed the head; it and `buf` (the bytes read past the head) outlive this.
  response_body_reader(parser& p, boost::beast::flat_buffer& buf);
  response_body_reader(const response_body_reader&) = delete;
  response_body_reader& operator=(const response_body_reader&) = delete;

  // One step: some of the body (or the end of the message) parsed into the body buffer the
  // caller set, or an error. A body buffer filled is no error (Beast's need_buffer).
  boost::asio::awaitable<boost::beast::error_code> read_some(net::stream_socket& sock);

 private:
  // Bytes held that the parser must not be called with yet (the assertion above).
  bool at_a_short_first_last_chunk() const;

  parser& p_;
  boost::beast::flat_buffer& buf_;
  bool chunk_seen_ = false;  // a chunk header parsed (the last chunk's only once whole)
  // The parser holds a reference to it (parser::on_chunk_header): a member, alive as long.
  std::function<void(std::uint64_t, boost::beast::string_view, boost::beast::error_code&)>
      on_chunk_header_;
};

}  // namespace mtlsd::proxy
