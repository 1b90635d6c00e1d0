#include "mtlsd/net/http_body_reader.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>
#include <string_view>

#include "mtlsd/net/socket.hpp"

namespace mtlsd::net {

namespace http = boost::beast::http;
using boost::beast::error_code;

bool http_body_reader::at_a_short_first_last_chunk() const {
  const std::string_view held(static_cast<const char*>(buf_.data().data()), buf_.size());
  return !body_begun_ && p_.chunked() && held.size() < 5 && held.starts_with("0\r\n");
}

// Beast's read_some_op (boost/beast/http/impl/read.hpp) with the wait above: parse what is
// held; on need_more read once (into at least 512 bytes of room, as Beast does) and parse again.
template <class Stream>
asio::awaitable<error_code> http_body_reader::read_some(Stream& stream) {
  error_code ec;
  for (;;) {
    if (buf_.size() > 0 && !at_a_short_first_last_chunk()) {
      const std::size_t used = p_.put(buf_.data(), ec);
      if (used > 0) body_begun_ = true;
      buf_.consume(used);
      if (ec != http::error::need_more) break;
    }
    const auto room = boost::beast::read_size(buf_, 65536);
    if (room == 0) co_return http::error::buffer_overflow;
    auto [read_ec, n] =
        co_await stream.async_read_some(buf_.prepare(room), asio::as_tuple(asio::use_awaitable));
    buf_.commit(n);
    if (read_ec == asio::error::eof) {
      if (!p_.got_some()) co_return http::error::end_of_stream;
      ec = {};
      p_.put_eof(ec);  // a body that ends at the close is whole; any other is partial
      break;
    }
    if (read_ec) co_return read_ec;
  }
  if (ec == http::error::need_buffer) ec = {};
  co_return ec;
}

template asio::awaitable<error_code> http_body_reader::read_some(stream_socket&);
template asio::awaitable<error_code> http_body_reader::read_some(
    asio::local::stream_protocol::socket&);

}  // namespace mtlsd::net
