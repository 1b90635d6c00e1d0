#include "mtlsd/proxy/fd_gate.hpp"

#include "mtlsd/proxy/h2_connection.hpp"

namespace mtlsd::proxy {

std::int64_t fds_per_connection(const config::listener& l) {
  if (l.http.enabled && l.http.offers("h2") &&
      l.http.upstream_protocol == config::http_upstream_protocol::http1)
    return 1 + h1_upstreams_in_use + h1_upstreams_idle;
  return 2;
}

fd_gate& connection_fds() {
  static fd_gate gate;
  return gate;
}

}  // namespace mtlsd::proxy
