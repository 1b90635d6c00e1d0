#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <iostream>
#include <optional>
#include <string_view>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/address.hpp"
#include "mtlsd/config/duration.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/net/url.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::cli {

namespace {

// What to GET, and the unix socket to connect to instead of the URL's host ("" for none).
struct health_target {
  net::http_url url;
  std::string unix_socket;
};

// --url: http://HOST:PORT/PATH, or an admin server on a unix socket, as admin.address spells it
// (`unix:/run/mtlsd/admin.sock`, which GETs /readyz, the readiness a HEALTHCHECK asks about),
// with a path after `:` (`unix:/run/mtlsd/admin.sock:/healthz`), or in nginx's spelling
// (`http://unix:/run/mtlsd/admin.sock:/healthz`). A socket path holding ":/" cannot be given.
std::optional<health_target> parse_health_url(std::string_view text, std::string& why) {
  std::string_view rest = text;
  for (std::string_view prefix : {"http://unix:", "unix:"})
    if (rest.starts_with(prefix)) {
      rest.remove_prefix(prefix.size());
      const auto split = rest.find(":/");
      health_target t;
      t.unix_socket = std::string(rest.substr(0, split));
      t.url.host = "localhost";
      t.url.target =
          split == std::string_view::npos ? "/readyz" : std::string(rest.substr(split + 1));
      t.url.text = std::string(text);
      if (t.unix_socket.empty() || t.unix_socket.size() > config::max_unix_path) {
        why =
            "needs a unix socket path of 1 to " + std::to_string(config::max_unix_path) + " bytes";
        return std::nullopt;
      }
      return t;
    }
  auto u = net::parse_http_url(text);
  if (!u) {
    why = "is not an http:// URL or unix:/PATH[:/TARGET]";
    return std::nullopt;
  }
  return health_target{std::move(*u), {}};
}

}  // namespace

int health_command(const options& o) {
  auto text = o.get("url");
  if (!text) {
    std::cerr << "mtlsd health: needs --url http://HOST:PORT/PATH\n";
    return 2;
  }
  std::string why;
  auto target = parse_health_url(*text, why);
  if (!target) {
    std::cerr << "mtlsd health: '" << *text << "' " << why << "\n";
    return 2;
  }
  config::duration timeout = std::chrono::seconds(2);
  if (auto t = o.get("timeout")) {
    auto d = config::parse_duration(*t);
    if (!d || d->count() == 0) {
      const auto longest = std::chrono::duration_cast<std::chrono::hours>(config::max_duration);
      std::cerr << "mtlsd health: invalid --timeout '" << *t << "' ("
                << (config::duration_too_long(*t)
                        ? "too long: at most " + config::format_duration(longest)
                        : std::string("a duration above 0"))
                << ")\n";
      return 2;
    }
    timeout = *d;
  }
  net::http_request req;
  req.user_agent = "mtlsd-health";
  req.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  req.unix_socket = target->unix_socket;
  // The verdict is the status: a 200 whose body is large (/metrics) is healthy, and of any other
  // answer the first 64 KiB say enough.
  req.body_prefix_only = true;
  // The probe talks to mtlsd's own admin port: never through a proxy from the environment.
  boost::asio::io_context ioc;
  net::http_result res;
  std::string crashed;
  boost::asio::co_spawn(ioc, net::http_fetch(target->url, req),
                        [&](std::exception_ptr e, net::http_result r) {
                          res = std::move(r);
                          if (e) crashed = util::message_of(e);
                        });
  ioc.run();
  if (!crashed.empty()) res.error = crashed;
  if (!res.ok()) {
    std::cerr << "mtlsd health: " << *text << ": " << res.error << "\n";
    return 1;
  }
  if (res.status != 200) {
    std::cerr << "mtlsd health: " << *text << ": HTTP " << res.status << ": " << res.body;
    return 1;
  }
  return 0;
}

}  // namespace mtlsd::cli
