#include "mtlsd/daemon/fd_limit.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "mtlsd/admin/admin_server.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/proxy/fd_gate.hpp"

namespace mtlsd::daemon {

std::uint64_t fd_overhead(const config::configuration& cfg, unsigned workers) {
  constexpr std::uint64_t admin_connections = admin::max_connections;  // admin_server's own cap
  constexpr std::uint64_t per_worker = 4;  // epoll, eventfd, timerfd, spare
  constexpr std::uint64_t process = 64;    // stdio, logs, inotify, revocation thread and fetches
  return cfg.listeners.size() * workers + admin_connections + per_worker * workers + process;
}

std::uint64_t fds_needed(const config::configuration& cfg, unsigned workers) {
  std::uint64_t n = fd_overhead(cfg, workers);
  for (const auto& l : cfg.listeners)
    n += static_cast<std::uint64_t>(proxy::fds_per_connection(l)) *
         static_cast<std::uint64_t>(l.max_connections);
  return n;
}

fd_budget raise_fd_limit(const config::configuration& cfg, unsigned workers) {
  fd_budget b;
  b.needed = fds_needed(cfg, workers);
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    log::warn("cannot read the file descriptor limit", {{"error", std::strerror(errno)}});
    return b;
  }
  b.soft_before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0)
      rl = raised;
    else
      log::warn("cannot raise the file descriptor limit",
                {{"soft", static_cast<std::uint64_t>(rl.rlim_cur)},
                 {"hard", static_cast<std::uint64_t>(rl.rlim_max)},
                 {"error", std::strerror(errno)}});
  }
  b.soft = rl.rlim_cur;
  b.hard = rl.rlim_max;
  const std::uint64_t overhead = fd_overhead(cfg, workers);
  b.for_connections = b.soft > overhead ? b.soft - overhead : 0;
  if (rl.rlim_cur != RLIM_INFINITY)
    proxy::connection_fds().set_budget(static_cast<std::int64_t>(b.for_connections));
  // No room at all is start-up's error (startup.cpp), not this warning.
  if (b.soft < b.needed && b.for_connections >= 2)
    log::warn(
        "the file descriptor limit is below what max_connections needs (2 per connection, 13 "
        "by default for an HTTP/2 client of an HTTP/1.1 upstream, plus overhead); connections "
        "beyond it are refused as over_capacity",
        {{"limit", b.soft},
         {"needed", b.needed},
         {"hard_limit", b.hard},
         {"overhead", overhead},
         {"for_connections", b.for_connections}});
  return b;
}

}  // namespace mtlsd::daemon
