#pragma once
// HTTP/2 from the TLS client (ALPN h2), framed by nghttp2: a read loop feeds
// nghttp2_session_mem_recv, a writer drains nghttp2_session_mem_send, and each stream is served
// upstream either over one h2c connection multiplexing every stream (gRPC: trailers, streaming
// both ways, RST_STREAM passed on) or by one HTTP/1.1 exchange per stream. Limits: the
// listener's http.max_concurrent_streams (SETTINGS), a 64 KiB header list (431), and
// http.stream_idle_timeout (RST_STREAM CANCEL). When the session is ended from outside (drain
// timeout, a reload that no longer admits the peer, revocation) the client gets GOAWAY first;
// when shutdown begins (session_control::drain_gracefully) it gets GOAWAY at once, the streams
// in flight finish, new ones are refused, and the connection closes after the last.
#include <prometheus/counter.h>
#include <algorithm>
#include <boost/asio/awaitable.hpp>

#include "mtlsd/config/config.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/session_registry.hpp"
#include "mtlsd/proxy/tls_stream.hpp"

namespace mtlsd::proxy {

// HTTP/1.1 upstreams cannot multiplex: each stream of an HTTP/2 client takes an upstream
// connection of its own while its exchange lasts. One client connection's streams hold at most
// http.max_upstream_connections_per_client at once (8 by default); the rest wait for one to
// finish (in order, bounded by http.stream_idle_timeout), as a browser keeps to a few
// connections per host. That bounds what one client connection costs (file descriptors, and the
// response buffers of the exchanges in progress) whatever http.max_concurrent_streams allows.
// Connections kept open after a keep-alive exchange, for the client connection's later streams:
// at most this many, and never more than may be in use.
inline constexpr std::size_t h1_upstreams_idle = 4;
inline std::size_t h1_upstreams_idle_kept(const config::http_options& h) {
  return std::min(h1_upstreams_idle,
                  static_cast<std::size_t>(h.max_upstream_connections_per_client));
}

struct h2_environment {
  tls_stream* tls;
  stream_socket* client_socket;
  stream_socket* upstream_socket;  // connected; h2c speaks on it, HTTP/1.1 reuses it first
  const config::listener* cfg;
  http_forwarding forwarding;
  http_request_sink sink;
  idle_deadline* clock;
  relay_result* result;
  bool upstream_h2c = false;
  session_control* control = nullptr;  // where a drain reaches the connection (may be null)
  // Sent first on each further upstream connection the HTTP/1.1 side opens: the PROXY v2
  // header `upstream_socket` began with (proxy_protocol: v2), "" = none.
  std::string upstream_preamble{};
  // The listener's mtlsd_upstream_connect_failures_total, for the connections the HTTP/1.1 side
  // opens itself (null: not counted).
  prometheus::Counter* upstream_connect_failures = nullptr;
};

// Serves one HTTP/2 connection to its end. Never throws for network or protocol errors.
asio::awaitable<void> serve_h2(h2_environment env);

}  // namespace mtlsd::proxy
