#include "mtlsd/proxy/upstream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "mtlsd/config/duration.hpp"
#include "mtlsd/net/connect.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/fd_gate.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

asio::awaitable<error_code> try_connect(stream_socket& sock, const stream_endpoint& ep) {
  error_code ec;
  if (sock.is_open()) sock.close(ec);
  sock.open(ep.protocol(), ec);
  if (!ec) net::make_non_blocking(sock, ec);
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
  // Each attempt beside the first holds a descriptor of the connection budget for its time.
  co_return co_await net::connect_any(sock, resolved.addresses, to.port, detail, &connection_fds(),
                                      connected_to);
}

asio::awaitable<error_code> connect_upstream_within(stream_socket& sock, const config::address& to,
                                                    std::chrono::milliseconds limit,
                                                    std::string& detail) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(co_await asio::this_coro::executor, limit);
  auto first =
      co_await (connect_upstream(sock, to, detail) || deadline.async_wait(as_tuple(use_awaitable)));
  if (first.index() == 0) co_return std::get<0>(first);
  // The caller's own cancellation ended the timer before the connect said so.
  if (auto [ec] = std::get<1>(first); ec) co_return asio::error::operation_aborted;
  // The lookup or the attempts were cancelled and said which step did not finish (nothing, for
  // a literal address).
  detail = (detail.empty() ? "connect to " + to.str() : detail) + " timed out after " +
           config::format_duration(limit) + " (timeouts.connect)";
  co_return asio::error::timed_out;
}

}  // namespace mtlsd::proxy
