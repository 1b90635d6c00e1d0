#include "mtlsd/tls/revocation/http_fetch.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstdint>
#include <vector>

#include "mtlsd/net/resolver.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::tls::revocation {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

std::optional<http_url> parse_http_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.size() <= scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(url[i])) != scheme[i]) return std::nullopt;
  http_url out;
  out.text = std::string(url);
  std::string_view rest = url.substr(scheme.size());
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.target.front() == '?') out.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) return std::nullopt;  // no credentials
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return std::nullopt;
  if (port.empty()) {
    out.port = "80";
  } else {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || p != port.data() + port.size() || value == 0 || value > 65535)
      return std::nullopt;
    out.port = std::string(port);
  }
  return out;
}

namespace {

// `step` says what is under way, for the caller's timeout message.
asio::awaitable<http_result> exchange(const http_url& url, const http_request& req,
                                      beast::tcp_stream& stream, std::string& step) {
  http_result out;
  std::uint16_t port = 0;
  std::from_chars(url.port.data(), url.port.data() + url.port.size(), port);  // checked by parse
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code lec;
  if (auto ip = asio::ip::make_address(url.host, lec); !lec) {
    endpoints.emplace_back(ip, port);
  } else {
    // The thread's c-ares resolver (net/resolver.hpp): the caller's deadline cancels it.
    step = "DNS lookup of " + url.host;
    net::resolve_result resolved = co_await net::resolve(url.host);
    if (resolved.ec) {
      out.error = "resolving " + url.host + ": " + resolved.ec.message();
      co_return out;
    }
    for (const auto& a : resolved.addresses)
      endpoints.emplace_back(a, port);
  }
  // Beast's own deadline as well as the caller's timer: it closes the socket on expiry, so no
  // operation can outlive the timeout even where per-operation cancellation is not supported.
  step = "connecting";
  stream.expires_after(req.timeout);
  auto [cec, ep] = co_await stream.async_connect(endpoints, as_tuple(use_awaitable));
  if (cec) {
    out.error = "connecting: " + cec.message();
    co_return out;
  }
  step = "HTTP exchange";
  http::request<http::string_body> msg{req.post ? http::verb::post : http::verb::get, url.target,
                                       11};
  const bool default_port = url.port == "80";
  const bool v6 = url.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + url.host + "]" : url.host;
  if (!default_port) host += ":" + url.port;
  msg.set(http::field::host, host);
  msg.set(http::field::user_agent, std::string("mtlsd/") + kVersion);
  msg.set(http::field::connection, "close");
  if (!req.accept.empty()) msg.set(http::field::accept, req.accept);
  if (req.post) {
    msg.set(http::field::content_type, req.content_type);
    msg.body() = req.body;
  }
  msg.prepare_payload();
  auto [wec, written] = co_await http::async_write(stream, msg, as_tuple(use_awaitable));
  if (wec) {
    out.error = "sending the request: " + wec.message();
    co_return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(req.max_body);
  auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple(use_awaitable));
  if (ec == http::error::body_limit) {
    out.error = "response larger than " + std::to_string(req.max_body) + " bytes";
    co_return out;
  }
  if (ec) {
    out.error = "reading the response: " + ec.message();
    co_return out;
  }
  auto res = parser.release();
  if (res.result() != http::status::ok) {
    out.error = "HTTP " + std::to_string(res.result_int()) + " " + std::string(res.reason());
    co_return out;
  }
  out.ok = true;
  out.body = std::move(res.body());
  co_return out;
}

}  // namespace

asio::awaitable<http_result> http_fetch(const http_url& url, http_request req) {
  using namespace asio::experimental::awaitable_operators;
  auto ex = co_await asio::this_coro::executor;
  beast::tcp_stream stream(ex);
  asio::steady_timer deadline(ex, req.timeout);
  std::string step = "HTTP exchange";
  auto result =
      co_await (exchange(url, req, stream, step) || deadline.async_wait(as_tuple(use_awaitable)));
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (result.index() == 0) co_return std::get<0>(std::move(result));
  http_result timed_out;
  timed_out.error =
      "no answer within " + std::to_string(req.timeout.count()) + "ms (" + step + " unfinished)";
  co_return timed_out;
}

}  // namespace mtlsd::tls::revocation
