#include "mtlsd/proxy/proxy_header_read.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <string>

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

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

// Appends exactly `n` bytes.
asio::awaitable<error_code> read_exact(stream_socket& sock, std::string& buf, std::size_t n) {
  const std::size_t have = buf.size();
  buf.resize(have + n);
  auto [ec, got] =
      co_await asio::async_read(sock, asio::buffer(buf.data() + have, n), as_tuple(use_awaitable));
  buf.resize(have + got);
  co_return ec;
}

// v1: the header ends at the first CRLF. Peek at what has arrived; take up to the CRLF when it
// is there, else take everything peeked (all of it is header) and wait for more.
asio::awaitable<error_code> read_v1_more(stream_socket& sock, std::string& buf) {
  auto [wec] = co_await sock.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
  if (wec) co_return wec;
  char peek[proxy_v1_max_header];
  const std::size_t room = proxy_v1_max_header - std::min(buf.size(), proxy_v1_max_header);
  const ssize_t n = ::recv(sock.native_handle(), peek, std::max<std::size_t>(room, 1), MSG_PEEK);
  if (n == 0) co_return asio::error::eof;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) co_return error_code{};
    co_return error_code(errno, asio::error::get_system_category());
  }
  std::string_view seen(peek, static_cast<std::size_t>(n));
  std::size_t take = seen.size();
  // The CRLF may straddle what we hold and what we peeked.
  if (!buf.empty() && buf.back() == '\r' && seen.front() == '\n') {
    take = 1;
  } else if (auto lf = seen.find("\r\n"); lf != std::string_view::npos) {
    take = lf + 2;
  }
  co_return co_await read_exact(sock, buf, take);
}

}  // namespace

asio::awaitable<std::pair<error_code, inbound_proxy_header>> read_proxy_header(
    stream_socket& sock) {
  std::string buf;
  if (auto ec = co_await read_exact(sock, buf, proxy_header_probe))
    co_return std::pair{ec, failed(read_error(ec))};
  for (;;) {
    auto h = parse_proxy_header(buf);
    if (h.status != inbound_proxy_header::state::incomplete) co_return std::pair{error_code{}, h};
    error_code ec;
    if (h.version == 2)
      ec = co_await read_exact(sock, buf, std::max<std::size_t>(h.size, 16) - buf.size());
    else
      ec = co_await read_v1_more(sock, buf);
    if (ec) co_return std::pair{ec, failed(read_error(ec))};
  }
}

}  // namespace mtlsd::proxy
