#pragma once
// File descriptors: each connection holds two (peer and upstream), an HTTP/2 client of an
// HTTP/1.1 upstream up to 13 (proxy::fds_per_connection), so max_connections of every listener
// needs that many times over, plus what the process holds anyway. At start mtlsd raises its soft
// RLIMIT_NOFILE to the hard limit and says so when even that is too low.
#include <cstdint>

#include "mtlsd/config/config.hpp"

namespace mtlsd::daemon {

struct fd_budget {
  std::uint64_t soft_before = 0;
  std::uint64_t soft = 0;  // after raising
  std::uint64_t hard = 0;
  std::uint64_t needed = 0;  // fds_per_connection of every listener's connections, plus overhead
  std::uint64_t for_connections = 0;  // soft minus overhead: proxy::connection_fds()'s budget
};

// Descriptors beyond the connections: listening sockets (one per listener and worker), the
// admin server's connections, each worker's epoll and eventfds, logs, inotify, stdio.
std::uint64_t fd_overhead(const config::configuration& cfg, unsigned workers);

// What `cfg` with `workers` workers needs at most.
std::uint64_t fds_needed(const config::configuration& cfg, unsigned workers);

// Raises the soft limit to the hard one, gives what it leaves after the overhead to
// proxy::connection_fds() (connections past it are refused as over_capacity), and warns (with
// the numbers) when `fds_needed` exceeds it.
fd_budget raise_fd_limit(const config::configuration& cfg, unsigned workers);

}  // namespace mtlsd::daemon
