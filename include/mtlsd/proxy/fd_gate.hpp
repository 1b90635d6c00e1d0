#pragma once
// The process's file descriptors, as places for connections: RLIMIT_NOFILE is per process, so
// every listener and worker draws on one budget (what the soft limit leaves after the process's
// own descriptors, daemon/fd_limit). A connection takes what it can hold at most
// (fds_per_connection: 2 at accept, the rest once it is known to need them) before it holds it
// and gives it back when it ends, so connections past the budget are refused as over_capacity
// while accept() itself, the admin server and the revocation fetches still have descriptors —
// as HAProxy derives maxconn from ulimit -n. A host name's Happy Eyeballs attempts beside the
// first take one each for their time, or wait (net/connect.hpp).
#include <cstdint>

#include "mtlsd/config/config.hpp"
#include "mtlsd/net/fd_gate.hpp"

namespace mtlsd::proxy {

// What one connection of listener `l` holds at most: its socket and its upstream's, or, when
// its HTTP/2 clients are served by an HTTP/1.1 upstream, its socket, the exchanges in progress
// and the idle upstream connections kept for its next streams (h2_connection.hpp).
std::int64_t fds_per_connection(const config::listener& l);
// What every connection takes at accept, whatever it turns out to be: its socket and its
// upstream's. The rest of fds_per_connection is taken when the connection needs it.
inline constexpr std::int64_t fds_at_accept = 2;

using net::fd_gate;

// The process's gate (one RLIMIT_NOFILE per process).
fd_gate& connection_fds();

}  // namespace mtlsd::proxy
