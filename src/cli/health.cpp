#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <iostream>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/duration.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/net/url.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::cli {

int health_command(const options& o) {
  auto text = o.get("url");
  if (!text) {
    std::cerr << "mtlsd health: needs --url http://HOST:PORT/PATH\n";
    return 2;
  }
  auto u = net::parse_http_url(*text);
  if (!u) {
    std::cerr << "mtlsd health: '" << *text << "' is not an http:// URL\n";
    return 2;
  }
  config::duration timeout = std::chrono::seconds(2);
  if (auto t = o.get("timeout")) {
    auto d = config::parse_duration(*t);
    if (!d || d->count() == 0) {
      std::cerr << "mtlsd health: invalid --timeout '" << *t << "' (a duration above 0)\n";
      return 2;
    }
    timeout = *d;
  }
  net::http_request req;
  req.user_agent = "mtlsd-health";
  req.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  // The probe talks to mtlsd's own admin port: never through a proxy from the environment.
  boost::asio::io_context ioc;
  net::http_result res;
  std::string crashed;
  boost::asio::co_spawn(ioc, net::http_fetch(*u, req),
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
