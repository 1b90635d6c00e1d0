#pragma once
// Parses an HTTP/1.1 response body a step at a time, as Beast's http::async_read_some would, into
// whatever body the caller's parser holds: the HTTP/2 front's HTTP/1.1 upstream (a buffer_body,
// proxy/h2_h1_exchange.cpp) and the HTTP client (a string_body, http_client.cpp) read with it. Not
// Beast's own: Boost 1.81's asserts (a debug or ASan build aborts, the whole daemon with it) when
// a body begins with its last chunk and "0\r\n" is followed by fewer than five bytes
// (boostorg/beast#2861). As proxy/http_framing's put_body does in HTTP/1.1 mode, that call waits
// for more bytes: no whole body ends in fewer than five bytes from there.
#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

namespace mtlsd::net {

class http_body_reader {
 public:
  using parser = boost::beast::http::basic_parser<false>;
  // `p` has parsed the head; it and `buf` (the bytes read past the head) outlive this.
  http_body_reader(parser& p, boost::beast::flat_buffer& buf) : p_(p), buf_(buf) {}
  http_body_reader(const http_body_reader&) = delete;
  http_body_reader& operator=(const http_body_reader&) = delete;

  // One step: some of the body (or the end of the message) parsed into the parser's body, or an
  // error. A body buffer filled is no error (Beast's need_buffer). Stream: net::stream_socket or
  // a local::stream_protocol socket (instantiated in http_body_reader.cpp).
  template <class Stream>
  boost::asio::awaitable<boost::beast::error_code> read_some(Stream& stream);

 private:
  // Bytes held that the parser must not be called with yet (the assertion above).
  bool at_a_short_first_last_chunk() const;

  parser& p_;
  boost::beast::flat_buffer& buf_;
  // The parser took bytes past the head. In a chunked body it does so only for a whole chunk
  // header of a non-empty chunk (the last chunk's is taken with the message's end), so false
  // means that no chunk came before a "0\r\n".
  bool body_begun_ = false;
};

}  // namespace mtlsd::net
