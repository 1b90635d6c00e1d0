#pragma once
// The in-process peer of the fuzz targets that read from a socket (http_response_fuzz,
// h2_upstream_fuzz): it writes the input a few bytes at a time, so that a head, a chunk header or
// a frame arrives across reads, and drains what the code under test sends it.
#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstddef>
#include <string_view>

namespace mtlsd::fuzz {

// Writes `bytes` `piece` bytes at a time (0: all at once), yielding between writes so that the
// reader runs on each piece, then ends the sending side. Stops early when the reader has closed:
// the rest cannot matter then.
template <class Socket>
boost::asio::awaitable<void> write_in_pieces(Socket& sock, std::string_view bytes,
                                             std::size_t piece) {
  namespace asio = boost::asio;
  while (!bytes.empty()) {
    const std::size_t n = piece == 0 ? bytes.size() : std::min(piece, bytes.size());
    auto [ec, written] = co_await asio::async_write(sock, asio::buffer(bytes.data(), n),
                                                    asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    bytes.remove_prefix(n);
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
  boost::system::error_code ignored;
  sock.shutdown(Socket::shutdown_send, ignored);
}

// Reads and drops whatever arrives until the other side closes.
template <class Socket>
boost::asio::awaitable<void> drain_until_closed(Socket& sock) {
  namespace asio = boost::asio;
  std::array<char, 16 * 1024> sink;
  for (;;) {
    auto [ec, n] =
        co_await sock.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
  }
}

}  // namespace mtlsd::fuzz
