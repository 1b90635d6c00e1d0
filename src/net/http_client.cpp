#include "mtlsd/net/http_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <vector>

#include "mtlsd/net/connect.hpp"
#include "mtlsd/net/http_body_reader.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::net {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using unix_socket = asio::local::stream_protocol;

std::string http_result::describe_unless(int wanted) const {
  std::string out;
  if (!ok()) {
    out = error;
  } else if (status == wanted) {
    return {};
  } else {
    out = "HTTP " + std::to_string(status);
    if (!reason.empty()) out += " " + reason;
  }
  // Through a forward proxy the answer may be the proxy's own (407, 502, its header limit): say
  // whose, or the operator looks at the wrong host (review). Some errors name it already.
  if (!proxy.empty() && out.find(proxy) == std::string::npos) out += " via proxy " + proxy;
  return out;
}

namespace {

// `step` names what is under way, for the timeout message.
asio::awaitable<std::string> connect_tcp(stream_socket& sock, const std::string& host,
                                         std::uint16_t port, std::string& step) {
  std::vector<asio::ip::address> addresses;
  boost::system::error_code lec;
  if (auto ip = asio::ip::make_address(host, lec); !lec) {
    addresses.push_back(ip);
  } else {
    // The context's c-ares resolver: the caller's deadline cancels the lookup.
    step = "DNS lookup of " + host;
    resolve_result resolved = co_await resolve(host);
    if (resolved.ec) co_return "resolving " + host + ": " + resolved.ec.message();
    addresses = std::move(resolved.addresses);
  }
  step = "connecting";
  // A name's addresses Happy Eyeballs style, as upstream connections (net/connect.hpp): a
  // responder whose first address drops SYNs costs 250 ms, not the whole timeout.
  std::string tried;
  if (auto ec = co_await connect_any(sock, addresses, port, tried); ec)
    co_return addresses.size() == 1 ? "connecting: " + ec.message() : "connecting: " + tried;
  co_return std::string{};
}

asio::awaitable<std::string> connect_unix(unix_socket::socket& sock, const std::string& path,
                                          std::string& step) {
  step = "connecting";
  auto [ec] = co_await sock.async_connect(unix_socket::endpoint(path), as_tuple(use_awaitable));
  if (ec) co_return "connecting to " + path + ": " + ec.message();
  co_return std::string{};
}

// Interim (1xx) responses read past before the answer.
constexpr int max_interim_responses = 8;
// The response header's limit, and what may wait in the read buffer beyond it.
constexpr std::size_t header_limit = 16 * 1024;
constexpr std::size_t read_buffer_limit = header_limit + 64 * 1024;

template <class Socket>
asio::awaitable<void> exchange(Socket& sock, const http_url& url, const http_request& req,
                               bool via_proxy, http_result& out, std::string& step) {
  step = "HTTP exchange";
  // Through a proxy the target is the absolute URL (RFC 9112 3.2.2); Host names the origin.
  http::request<http::string_body> msg{req.post ? http::verb::post : http::verb::get,
                                       via_proxy ? url.absolute() : url.target, 11};
  msg.set(http::field::host, req.unix_socket.empty() ? url.authority() : "localhost");
  msg.set(http::field::user_agent,
          req.user_agent.empty() ? std::string("mtlsd/") + kVersion : req.user_agent);
  msg.set(http::field::connection, "close");
  if (!req.accept.empty()) msg.set(http::field::accept, req.accept);
  if (req.post) {
    msg.set(http::field::content_type, req.content_type);
    msg.body() = req.body;
  }
  msg.prepare_payload();
  if (!req.preamble.empty()) {
    auto [pec, n] =
        co_await asio::async_write(sock, asio::buffer(req.preamble), as_tuple(use_awaitable));
    if (pec) {
      out.error = "sending the request: " + pec.message();
      co_return;
    }
  }
  auto [wec, written] = co_await http::async_write(sock, msg, as_tuple(use_awaitable));
  if (wec) {
    out.error = "sending the request: " + wec.message();
    co_return;
  }
  // What waits in the buffer is capped: Beast bounds the header (header_limit) and the body
  // (body_limit, moved out as it is parsed) but not a chunk's extensions or the trailer, which a
  // hostile or broken responder could otherwise grow until the deadline (review: 1 GB in 2 s).
  boost::beast::flat_buffer buffer(read_buffer_limit);
  // Interim responses (100 Continue, 103 Early Hints) come before the answer and are read past
  // (review: an upstream check took "100 Continue" for the answer and read down); a few at
  // most, the deadline bounding the rest. 101 is an answer: we never ask to switch protocols.
  for (int interim = 0;; ++interim) {
    http::response_parser<http::string_body> parser;
    parser.header_limit(header_limit);
    // Beast checks a Content-Length against the limit while parsing the header: a probe that
    // never reads the body must not be refused for its size.
    if (req.headers_only)
      parser.body_limit(boost::none);
    else
      parser.body_limit(req.max_body);
    auto [ec, n] = co_await http::async_read_header(sock, buffer, parser, as_tuple(use_awaitable));
    // The body by http_body_reader, not Beast's async_read: Boost 1.81 asserts on a chunked body
    // that begins with its last chunk arriving in pieces (boostorg/beast#2861), which a
    // responder can send on purpose (http_response_fuzz found it).
    if (!ec && !req.headers_only) {
      http_body_reader body(parser, buffer);
      while (!ec && !parser.is_done())
        ec = co_await body.read_some(sock);
    }
    if (ec == http::error::buffer_overflow) {
      out.error = "response framing (a chunk extension or the trailer) over " +
                  std::to_string(read_buffer_limit / 1024) + " KiB";
      co_return;
    }
    if (ec == http::error::body_limit && req.body_prefix_only) {
      // Beast says so only once the whole head is parsed (at its end, or in the body).
      auto& cut = parser.get();
      out.status = static_cast<int>(cut.result_int());
      out.reason = std::string(cut.reason());
      out.body = std::move(cut.body());
      co_return;
    }
    if (ec == http::error::body_limit) {
      out.error = "response larger than " + std::to_string(req.max_body) + " bytes";
      co_return;
    }
    if (ec) {
      out.error = "reading the response: " + ec.message();
      co_return;
    }
    auto& res = parser.get();
    const int status = static_cast<int>(res.result_int());
    if (status / 100 == 1 && status != 101 && interim < max_interim_responses) continue;
    out.status = status;
    out.reason = std::string(res.reason());
    if (!req.headers_only) out.body = std::move(res.body());
    co_return;
  }
}

template <class Socket, class Work>
asio::awaitable<std::string> with_deadline(std::shared_ptr<Socket> sock,
                                           std::chrono::milliseconds timeout, Work work,
                                           std::string& step) {
  using namespace asio::experimental::awaitable_operators;
  auto ex = co_await asio::this_coro::executor;
  // The deadline cancels whatever is under way (the DNS lookup included). Closing the socket a
  // moment later ends any socket operation that does not take cancellation, so nothing can
  // outlive the deadline by more than that; the moment's gap keeps the close from winning the
  // race with the deadline (which would report "Operation canceled" instead of the timeout).
  asio::steady_timer deadline(ex, timeout), closer(ex, timeout + std::chrono::milliseconds(20));
  closer.async_wait([sock](boost::system::error_code ec) {
    if (!ec) sock->close(ec);
  });
  auto result = co_await (std::move(work) || deadline.async_wait(as_tuple(use_awaitable)));
  closer.cancel();
  boost::system::error_code ignored;
  sock->shutdown(Socket::shutdown_both, ignored);
  sock->close(ignored);
  if (result.index() == 0) co_return std::string{};
  co_return "no answer within " + std::to_string(timeout.count()) + "ms (" + step + " unfinished)";
}

}  // namespace

asio::awaitable<http_result> http_fetch(http_url url, http_request req) {
  auto ex = co_await asio::this_coro::executor;
  http_result out;
  std::string step = "connecting";
  std::string timed_out;
  if (!req.unix_socket.empty()) {
    auto sock = std::make_shared<unix_socket::socket>(ex);
    auto work = [](std::shared_ptr<unix_socket::socket> s, const http_url& u, const http_request& r,
                   http_result& o, std::string& st) -> asio::awaitable<void> {
      o.error = co_await connect_unix(*s, r.unix_socket, st);
      if (o.error.empty()) co_await exchange(*s, u, r, false, o, st);
    };
    timed_out = co_await with_deadline(sock, req.timeout, work(sock, url, req, out, step), step);
  } else {
    const http_url* proxy = req.proxy ? req.proxy->for_http(url.host) : nullptr;
    if (proxy) out.proxy = proxy->authority();
    auto sock = std::make_shared<stream_socket>(ex);
    auto work = [](std::shared_ptr<stream_socket> s, const http_url& u, const http_url* p,
                   const http_request& r, http_result& o,
                   std::string& st) -> asio::awaitable<void> {
      const http_url& first_hop = p ? *p : u;
      o.error = co_await connect_tcp(*s, first_hop.host, first_hop.port, st);
      if (!o.error.empty() && p) o.error = "proxy " + p->authority() + ": " + o.error;
      if (o.error.empty()) co_await exchange(*s, u, r, p != nullptr, o, st);
    };
    timed_out =
        co_await with_deadline(sock, req.timeout, work(sock, url, proxy, req, out, step), step);
  }
  if (!timed_out.empty()) {
    http_result t;
    t.error = std::move(timed_out);
    if (!out.proxy.empty()) t.error += " via proxy " + out.proxy;
    t.proxy = std::move(out.proxy);
    co_return t;
  }
  co_return out;
}

asio::awaitable<std::string> tcp_probe(std::string host, std::uint16_t port, std::string unix_path,
                                       std::chrono::milliseconds timeout) {
  auto ex = co_await asio::this_coro::executor;
  std::string step = "connecting";
  std::string error;
  std::string timed_out;
  if (!unix_path.empty()) {
    auto sock = std::make_shared<unix_socket::socket>(ex);
    auto work = [](std::shared_ptr<unix_socket::socket> s, const std::string& path, std::string& e,
                   std::string& st) -> asio::awaitable<void> {
      e = co_await connect_unix(*s, path, st);
    };
    timed_out = co_await with_deadline(sock, timeout, work(sock, unix_path, error, step), step);
  } else {
    auto sock = std::make_shared<stream_socket>(ex);
    auto work = [](std::shared_ptr<stream_socket> s, const std::string& h, std::uint16_t p,
                   std::string& e, std::string& st) -> asio::awaitable<void> {
      e = co_await connect_tcp(*s, h, p, st);
    };
    timed_out = co_await with_deadline(sock, timeout, work(sock, host, port, error, step), step);
  }
  co_return timed_out.empty() ? error : timed_out;
}

}  // namespace mtlsd::net
