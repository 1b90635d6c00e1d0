#pragma once
// The process's file descriptors, as places for connections: RLIMIT_NOFILE is per process, so
// every listener and worker draws on one budget (what the soft limit leaves after the process's
// own descriptors, daemon/fd_limit). A connection takes what it can hold at most
// (fds_per_connection: 2 at accept, the rest once it is known to need them) before it holds it
// and gives it back when it ends, so connections past the budget are refused as over_capacity
// while accept() itself, the admin server and the revocation fetches still have descriptors —
// as HAProxy derives maxconn from ulimit -n.
#include <atomic>
#include <cstdint>

#include "mtlsd/config/config.hpp"

namespace mtlsd::proxy {

// What one connection of listener `l` holds at most: its socket and its upstream's, or, when
// its HTTP/2 clients are served by an HTTP/1.1 upstream, its socket, the exchanges in progress
// and the idle upstream connections kept for its next streams (h2_connection.hpp).
std::int64_t fds_per_connection(const config::listener& l);
// What every connection takes at accept, whatever it turns out to be: its socket and its
// upstream's. The rest of fds_per_connection is taken when the connection needs it.
inline constexpr std::int64_t fds_at_accept = 2;

class fd_gate {
 public:
  // Unlimited until set (unit tests, and a limit that could not be read).
  void set_budget(std::int64_t fds) { budget_.store(fds); }
  std::int64_t budget() const { return budget_.load(); }
  std::int64_t used() const { return used_.load(); }

  // True when `fds` more fit the budget (then they are held until give_back).
  bool take(std::int64_t fds) {
    if (used_.fetch_add(fds) + fds <= budget_.load()) return true;
    used_.fetch_sub(fds);
    return false;
  }
  void give_back(std::int64_t fds) { used_.fetch_sub(fds); }

 private:
  std::atomic<std::int64_t> budget_{INT64_MAX};
  std::atomic<std::int64_t> used_{0};
};

// The process's gate (one RLIMIT_NOFILE per process).
fd_gate& connection_fds();

}  // namespace mtlsd::proxy
