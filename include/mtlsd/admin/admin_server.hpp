#pragma once
// The admin listener: GET /metrics (Prometheus text 0.0.4), /healthz, /readyz. One small
// Boost.Beast server on the control thread's io_context — no thread per request, and never on a
// worker, so a scrape cannot slow the connection path.
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "mtlsd/config/address.hpp"

namespace mtlsd::admin {

// Connections the admin listener holds at once: its clients are scrapers and probes, not the
// public, so a few dozen is plenty; past it the longest-waiting one gives way (admin_server.cpp).
// The daemon's file-descriptor budget counts these too (daemon/fd_limit.cpp).
inline constexpr std::size_t max_connections = 64;

struct readiness {
  bool ready = false;
  std::string why;      // what is not ready, for the 503 body
  std::string details;  // more lines for the body either way (the upstream checks' states)
};

// What a /readyz request asks to be judged. `GET /readyz?exclude=upstream` (Kubernetes' apiserver
// convention, `/readyz?exclude=<check>`) leaves the listeners' upstream checks out: a native
// sidecar's startupProbe asks that, since the kubelet starts the app those checks reach only once
// the sidecar's startup probe has passed.
enum class readiness_checks { all, all_but_upstream };

class server {
 public:
  // Binds at once (throws boost::system::system_error when it cannot); serves after start().
  server(boost::asio::io_context& ioc, const config::address& address,
         std::shared_ptr<prometheus::Collectable> registry,
         std::function<readiness(readiness_checks)> ready);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Where failed accepts and unexpected exceptions are counted (set before start()).
  void count_errors_in(prometheus::Counter* errors);
  void start();
  void stop();
  const std::string& bound_address() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace mtlsd::admin
