#include "mtlsd/proxy/response_body_reader.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>
#include <string_view>

namespace mtlsd::proxy {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::beast::error_code;

response_body_reader::response_body_reader(parser& p, boost::beast::flat_buffer& buf)
    : p_(p), buf_(buf) {
  on_chunk_header_ = [this](std::uint64_t, boost::beast::string_view, error_code&) {
    chunk_seen_ = true;
  };
  p_.on_chunk_header(on_chunk_header_);
}

bool response_body_reader::at_a_short_first_last_chunk() const {
  const std::string_view held(static_cast<const char*>(buf_.data().data()), buf_.size());
  return !chunk_seen_ && p_.chunked() && held.size() < 5 && held.starts_with("0\r\n");
}

// Beast's read_some_op (boost/beast/http/impl/read.hpp) with the wait above: parse what is
// held; on need_more read once (into at least 512 bytes of room, as Beast does) and parse again.
asio::awaitable<error_code> response_body_reader::read_some(net::stream_socket& sock) {
  error_code ec;
  for (;;) {
    if (buf_.size() > 0 && !at_a_short_first_last_chunk()) {
      buf_.consume(p_.put(buf_.data(), ec));
      if (ec != http::error::need_more) break;
    }
    const auto room = boost::beast::read_size(buf_, 65536);
    if (room == 0) co_return http::error::buffer_overflow;
    auto [read_ec, n] =
        co_await sock.async_read_some(buf_.prepare(room), asio::as_tuple(asio::use_awaitable));
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

}  // namespace mtlsd::proxy
