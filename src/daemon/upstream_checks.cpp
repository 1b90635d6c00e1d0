#include "mtlsd/daemon/upstream_checks.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "mtlsd/log/log.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/proxy/proxy_protocol.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using ms = std::chrono::milliseconds;

const char* to_string(upstream_checks::health h) {
  switch (h) {
    case upstream_checks::health::up:
      return "up";
    case upstream_checks::health::down:
      return "down";
    default:
      return "unknown";
  }
}

struct upstream_checks::check : std::enable_shared_from_this<check> {
  check(asio::io_context& ioc, metrics::registry& m, const config::listener& l)
      : metrics(m),
        upstream(l.upstream),
        opts(l.upstream_check),
        speaks_proxy_v2(l.proxy_protocol == config::proxy_protocol_mode::v2),
        timer(ioc) {
    current.listener = l.name;
    current.upstream = l.upstream.str();
  }

  metrics::registry& metrics;
  config::address upstream;
  config::upstream_check_options opts;
  // The listener sends its upstream a PROXY v2 header first: so does the HTTP probe (a LOCAL
  // one), or an upstream that requires the header answers 400 and a healthy one reads down.
  bool speaks_proxy_v2;
  asio::steady_timer timer;
  status current;
  prometheus::Gauge* gauge = nullptr;  // from the first result on
  bool stopped = false;

  // "" when up; else why not. `detail` gets the HTTP status when there is one.
  asio::awaitable<std::string> probe(std::string& detail) {
    const auto timeout = std::chrono::duration_cast<ms>(opts.timeout);
    if (opts.type == config::upstream_check_type::tcp)
      co_return co_await net::tcp_probe(upstream.host, upstream.port, upstream.path, timeout);
    net::http_url url;
    url.host = upstream.is_unix() ? "localhost" : upstream.host;
    url.port = upstream.is_unix() ? 80 : upstream.port;
    url.target = opts.path;
    url.text = upstream.str() + opts.path;
    net::http_request req;
    req.timeout = timeout;
    req.headers_only = true;  // the status is the answer; a large body must not matter
    req.unix_socket = upstream.path;
    if (speaks_proxy_v2) req.preamble = proxy::build_proxy_v2_local_header();
    // No proxy: the upstream is ours, next to us.
    net::http_result res = co_await net::http_fetch(url, std::move(req));
    if (!res.ok()) co_return res.error;
    detail = "HTTP " + std::to_string(res.status);
    if (res.status >= 200 && res.status < 400) co_return std::string{};
    co_return detail + (res.reason.empty() ? "" : " " + res.reason);
  }

  void record(const std::string& error, std::string detail) {
    const health was = current.state;
    current.state = error.empty() ? health::up : health::down;
    current.detail = error.empty() ? std::move(detail) : error;
    if (!gauge) gauge = &metrics.upstream_up().Add({{"listener", current.listener}});
    gauge->Set(error.empty() ? 1 : 0);
    if (current.state == was) return;
    if (current.state == health::down)
      log::warn("upstream check failed",
                {{"listener", current.listener}, {"upstream", current.upstream}, {"error", error}});
    else
      log::info("upstream check passed", {{"listener", current.listener},
                                          {"upstream", current.upstream},
                                          {"detail", current.detail}});
  }

  static asio::awaitable<void> loop(std::shared_ptr<check> self) {
    while (!self->stopped) {
      const auto started = std::chrono::steady_clock::now();
      std::string detail;
      const std::string error = co_await self->probe(detail);
      if (self->stopped) co_return;  // a reload replaced or removed this check meanwhile
      self->record(error, std::move(detail));
      self->timer.expires_at(started + self->opts.interval);
      co_await self->timer.async_wait(as_tuple(use_awaitable));
    }
  }

  void start() {
    asio::co_spawn(timer.get_executor(), loop(shared_from_this()),
                   [name = current.listener](std::exception_ptr e) {
                     if (e)
                       log::error("upstream check stopped",
                                  {{"listener", name}, {"error", util::message_of(e)}});
                   });
  }

  void stop() {
    stopped = true;
    timer.cancel();
    if (gauge) metrics.upstream_up().Remove(gauge);
    gauge = nullptr;
  }
};

upstream_checks::upstream_checks(asio::io_context& ioc, metrics::registry& metrics)
    : ioc_(ioc), metrics_(metrics) {}

upstream_checks::~upstream_checks() {
  stop();
}

void upstream_checks::update(const config::configuration& cfg) {
  std::vector<std::shared_ptr<check>> next, started;
  for (const auto& l : cfg.listeners) {
    if (!l.upstream_check.enabled) continue;
    auto same = std::find_if(checks_.begin(), checks_.end(), [&l](const auto& c) {
      // The PROXY preamble too (second read: a reload turning proxy_protocol on or off kept the
      // probe speaking as before).
      return c->current.listener == l.name && c->upstream == l.upstream &&
             c->opts == l.upstream_check &&
             c->speaks_proxy_v2 == (l.proxy_protocol == config::proxy_protocol_mode::v2);
    });
    if (same != checks_.end()) {
      next.push_back(*same);  // unchanged: keeps its state, series and rhythm
      checks_.erase(same);
      continue;
    }
    next.push_back(std::make_shared<check>(ioc_, metrics_, l));
    started.push_back(next.back());
  }
  // Gone, lost its check, or changed: stopped (series removed) before a replacement under the
  // same listener name adds its own.
  for (auto& old : checks_)
    old->stop();
  checks_ = std::move(next);
  for (auto& c : started)
    c->start();
}

void upstream_checks::stop() {
  for (auto& c : checks_)
    c->stop();
  checks_.clear();
}

std::vector<upstream_checks::status> upstream_checks::statuses() const {
  std::vector<status> out;
  for (const auto& c : checks_)
    out.push_back(c->current);
  return out;
}

}  // namespace mtlsd::daemon
