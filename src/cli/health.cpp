#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <iostream>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/duration.hpp"

namespace mtlsd::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

struct url {
  std::string host, port, target;
};

std::optional<url> parse_url(std::string_view s) {
  constexpr std::string_view scheme = "http://";
  if (s.substr(0, scheme.size()) != scheme) return std::nullopt;
  s.remove_prefix(scheme.size());
  auto slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  url u;
  u.target = slash == std::string_view::npos ? "/" : std::string(s.substr(slash));
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    u.host = std::string(authority.substr(1, close - 1));
    u.port = close + 2 <= authority.size() ? std::string(authority.substr(close + 2)) : "80";
  } else {
    auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    u.port = colon == std::string_view::npos ? "80" : std::string(authority.substr(colon + 1));
  }
  if (u.host.empty() || u.port.empty()) return std::nullopt;
  return u;
}

}  // namespace

int health_command(const options& o) {
  auto text = o.get("url");
  if (!text) {
    std::cerr << "mtlsd health: needs --url http://HOST:PORT/PATH\n";
    return 2;
  }
  auto u = parse_url(*text);
  if (!u) {
    std::cerr << "mtlsd health: '" << *text << "' is not an http:// URL\n";
    return 2;
  }
  config::duration timeout = std::chrono::seconds(2);
  if (auto t = o.get("timeout")) {
    auto d = config::parse_duration(*t);
    if (!d) {
      std::cerr << "mtlsd health: invalid --timeout '" << *t << "'\n";
      return 2;
    }
    timeout = *d;
  }
  asio::io_context ioc;
  int status = 0;
  std::string body, error;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        beast::tcp_stream stream(ioc);
        stream.expires_after(timeout);
        asio::ip::tcp::resolver resolver(ioc);
        auto endpoints = co_await resolver.async_resolve(u->host, u->port, asio::use_awaitable);
        co_await stream.async_connect(endpoints, asio::use_awaitable);
        http::request<http::empty_body> req{http::verb::get, u->target, 11};
        req.set(http::field::host, u->host);
        req.set(http::field::user_agent, "mtlsd-health");
        co_await http::async_write(stream, req, asio::use_awaitable);
        beast::flat_buffer buffer;
        http::response<http::string_body> res;
        co_await http::async_read(stream, buffer, res, asio::use_awaitable);
        status = static_cast<int>(res.result_int());
        body = res.body();
      },
      [&](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const boost::system::system_error& ex) {
          error = ex.code().message();  // what() appends Boost's source location
        } catch (const std::exception& ex) {
          error = ex.what();
        }
      });
  ioc.run();
  if (!error.empty()) {
    std::cerr << "mtlsd health: " << *text << ": " << error << "\n";
    return 1;
  }
  if (status != 200) {
    std::cerr << "mtlsd health: " << *text << ": HTTP " << status << ": " << body;
    return 1;
  }
  return 0;
}

}  // namespace mtlsd::cli
