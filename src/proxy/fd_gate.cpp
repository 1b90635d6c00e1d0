#include "mtlsd/proxy/fd_gate.hpp"

#include "mtlsd/proxy/h2_connection.hpp"

namespace mtlsd::proxy {

std::int64_t fds_per_connection(const config::listener& l) {
  if (l.http.enabled && l.http.offers("h2") &&
      l.http.upstream_protocol == config::http_upstream_protocol::http1) {
    const auto in_use = static_cast<std::size_t>(l.http.max_upstream_connections_per_client);
    return static_cast<std::int64_t>(1 + in_use + h1_upstreams_idle_kept(l.http));
  }
  return 2;
}

fd_gate& connection_fds() {
  static fd_gate gate;
  return gate;
}

}  // namespace mtlsd::proxy
