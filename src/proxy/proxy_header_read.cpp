#include "mtlsd/proxy/proxy_header_read.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <string>

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// The most one read appends. A v2 header announces up to 64 KiB in its first 16 bytes; what is
// held grows with what arrives, a step at a time, never with what was announced (review: a
// sender of those 16 bytes alone pinned ~70 KiB until timeouts.handshake).
constexpr std::size_t read_step = 16 * 1024;

inbound_proxy_header failed(const std::string& why) {
  inbound_proxy_header h;
  h.status = inbound_proxy_header::state::invalid;
  h.error = why;
  return h;
}

std::string read_error(const error_code& ec) {
  return ec == asio::error::eof ? "connection closed before a complete PROXY header"
                                : "reading the PROXY header: " + ec.message();
}

// Appends what has arrived, at most `n` bytes (and `read_step`), without waiting. It reads
// through a buffer on this ordinary function's stack, never in a coroutine frame that would hold
// it across waits, so `buf` grows by what came and no more. would_block: nothing has arrived;
// eof: the peer closed.
error_code append_arrived(stream_socket& sock, std::string& buf, std::size_t n) {
  char chunk[read_step];
  ssize_t got = 0;
  do {
    got = ::recv(sock.native_handle(), chunk, std::min(n, read_step), MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got > 0) {
    buf.append(chunk, static_cast<std::size_t>(got));
    return {};
  }
  if (got == 0) return asio::error::eof;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return asio::error::would_block;
  return error_code(errno, asio::error::get_system_category());
}

// append_arrived, waiting until something has arrived (or the peer closed).
asio::awaitable<error_code> read_arrived(stream_socket& sock, std::string& buf, std::size_t n) {
  for (;;) {
    const error_code ec = append_arrived(sock, buf, n);
    if (ec != asio::error::would_block) co_return ec;
    auto [wec] = co_await sock.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    if (wec) co_return wec;
  }
}

// v1: the line ends at its first LF (a CRLF, or a bare LF that refuses it). Peek at what has
// arrived; take up to that LF when it is there, else take everything peeked (all of it is
// header) and wait for more. Nothing after the first LF is taken: it is the ClientHello.
asio::awaitable<error_code> read_v1_more(stream_socket& sock, std::string& buf) {
  char peek[proxy_v1_max_header];
  const std::size_t room = proxy_v1_max_header - std::min(buf.size(), proxy_v1_max_header);
  ssize_t n = 0;
  for (;;) {
    n = ::recv(sock.native_handle(), peek, std::max<std::size_t>(room, 1), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
    auto [wec] = co_await sock.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    if (wec) co_return wec;
  }
  if (n == 0) co_return asio::error::eof;
  if (n < 0) co_return error_code(errno, asio::error::get_system_category());
  const std::string_view seen(peek, static_cast<std::size_t>(n));
  const auto lf = seen.find('\n');
  // What was peeked is there: this read takes it (what it does not take, the next call does).
  const error_code ec =
      append_arrived(sock, buf, lf == std::string_view::npos ? seen.size() : lf + 1);
  co_return ec == asio::error::would_block ? error_code{} : ec;
}

}  // namespace

asio::awaitable<std::pair<error_code, inbound_proxy_header>> read_proxy_header(
    stream_socket& sock) {
  std::string buf;
  for (;;) {
    // Judged after every read: a first byte that begins neither version is refused at once.
    auto h = parse_proxy_header(buf);
    if (h.status != inbound_proxy_header::state::incomplete) co_return std::pair{error_code{}, h};
    error_code ec;
    if (buf.size() < proxy_header_probe)
      ec = co_await read_arrived(sock, buf, proxy_header_probe - buf.size());
    else if (h.version == 2)
      ec = co_await read_arrived(sock, buf, std::max<std::size_t>(h.size, 16) - buf.size());
    else
      ec = co_await read_v1_more(sock, buf);
    if (ec) co_return std::pair{ec, failed(read_error(ec))};
  }
}

}  // namespace mtlsd::proxy
