#include "mtlsd/proxy/upstream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "mtlsd/net/resolver.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

asio::awaitable<error_code> try_connect(stream_socket& sock, const stream_endpoint& ep) {
  error_code ec;
  if (sock.is_open()) sock.close(ec);
  sock.open(ep.protocol(), ec);
  if (ec) co_return ec;
  auto [cec] = co_await sock.async_connect(ep, as_tuple(use_awaitable));
  if (!cec) set_nodelay(sock, ep);
  co_return cec;
}

}  // namespace

asio::awaitable<error_code> connect_upstream(stream_socket& sock, const config::address& to,
                                             std::string& detail,
                                             std::chrono::steady_clock::time_point* resolved_at,
                                             stream_endpoint* connected_to) {
  auto literal = literal_endpoint(to);
  if (auto* ep = std::get_if<stream_endpoint>(&literal)) {
    auto ec = co_await try_connect(sock, *ep);
    if (!ec && connected_to) *connected_to = *ep;
    // Cancelled: nothing to add to the session's "connect to X timed out".
    if (ec && ec != asio::error::operation_aborted)
      detail = "connect to " + to.str() + ": " + ec.message();
    co_return ec;
  }
  // c-ares on this worker's io_context (src/net/resolver.cpp): cancelled at once by the
  // session's connect deadline or kill, never serialized behind other lookups.
  net::resolve_result resolved = co_await net::resolve(to.host);
  if (resolved.ec) {
    // Aborted = the connect deadline (or a kill) ended the lookup: the session says so.
    detail = resolved.ec == asio::error::operation_aborted
                 ? "DNS lookup of " + to.host
                 : "resolve " + to.host + ": " + resolved.ec.message();
    co_return resolved.ec;
  }
  if (resolved_at) *resolved_at = std::chrono::steady_clock::now();
  error_code last = asio::error::host_not_found;
  for (const auto& ip : resolved.addresses) {
    const stream_endpoint ep(asio::ip::tcp::endpoint(ip, to.port));
    last = co_await try_connect(sock, ep);
    if (!last) {
      if (connected_to) *connected_to = ep;
      co_return last;
    }
    if (last == asio::error::operation_aborted) {  // the step that did not finish, as above
      detail = "connect to " + format_endpoint(ep);
      break;
    }
    detail += (detail.empty() ? "" : "; ") +
              ("connect to " + format_endpoint(ep) + ": " + last.message());
  }
  co_return last;
}

}  // namespace mtlsd::proxy
