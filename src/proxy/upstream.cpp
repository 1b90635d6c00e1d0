#include "mtlsd/proxy/upstream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

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
  if (!cec) set_nodelay(sock);
  co_return cec;
}

}  // namespace

asio::awaitable<error_code> connect_upstream(stream_socket& sock, const config::address& to,
                                             std::string& detail) {
  auto literal = literal_endpoint(to);
  if (auto* ep = std::get_if<stream_endpoint>(&literal)) {
    auto ec = co_await try_connect(sock, *ep);
    if (ec) detail = "connect to " + to.str() + ": " + ec.message();
    co_return ec;
  }
  asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
  auto [rec, results] =
      co_await resolver.async_resolve(to.host, std::to_string(to.port), as_tuple(use_awaitable));
  if (rec) {
    detail = "resolve " + to.host + ": " + rec.message();
    co_return rec;
  }
  error_code last = asio::error::host_not_found;
  for (const auto& entry : results) {
    last = co_await try_connect(sock, stream_endpoint(entry.endpoint()));
    if (!last) co_return last;
    if (last == asio::error::operation_aborted) break;
    detail += (detail.empty() ? "" : "; ") +
              ("connect to " + format_endpoint(stream_endpoint(entry.endpoint())) + ": " +
               last.message());
  }
  co_return last;
}

}  // namespace mtlsd::proxy
