#pragma once
// The one HTTP client: one plain-HTTP/1.1 request (OCSP POST, CRL GET, the health command's
// GET, an upstream check) on a fresh connection, bounded by one deadline that covers the DNS
// lookup (c-ares, net/resolver.hpp), connect, write and read, with the response size capped.
// Optionally through a forward HTTP proxy (net/proxy_env.hpp): the request then goes to the
// proxy in absolute form ("GET http://host/path HTTP/1.1").
//
// Runs on the caller's executor, which must be an io_context's (the resolver is that
// context's). Never throws for network errors: they come back as text in `error`.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/url.hpp"

namespace mtlsd::net {

struct http_request {
  bool post = false;
  std::string body;          // POST only
  std::string content_type;  // POST only
  std::string accept;
  std::string user_agent;                   // "" = mtlsd/VERSION
  std::chrono::milliseconds timeout{2000};  // the whole exchange, DNS lookup included
  std::size_t max_body = 64 * 1024;
  bool headers_only = false;  // stop after the status line and headers (probes)
  // A body over max_body is no error: the answer comes back with what was read of it (nothing
  // when its Content-Length is over) and the rest left unread. For the health command, whose
  // verdict is the status alone.
  bool body_prefix_only = false;
  // Connect to this unix socket instead of the URL's host (like curl --unix-socket).
  std::string unix_socket;
  // Sent on the connection before the request: an upstream probe's PROXY v2 LOCAL header.
  std::string preamble;
  // Go through settings->for_http(host) when set; null = always direct.
  std::shared_ptr<const proxy_settings> proxy;
};

struct http_result {
  std::string error;   // empty: a complete response arrived within the limits
  int status = 0;      // when error is empty
  std::string reason;  // the status line's reason phrase
  std::string body;    // unless headers_only
  std::string proxy;   // the proxy's authority when the request went through one

  bool ok() const { return error.empty(); }
  // error, or "HTTP 503 Service Unavailable" for a response that is not `wanted`.
  std::string describe_unless(int wanted) const;
};

// Both by value: a coroutine keeps its parameters in its frame, and a reference parameter bound
// to a caller's temporary would dangle at the first suspension.
boost::asio::awaitable<http_result> http_fetch(http_url url, http_request req);

// A TCP connection check with the same resolver and deadline rules: resolve `host` (an IP
// literal is used as it is), connect to each address in turn until one accepts, close.
// `unix_socket` non-empty: connect there instead. Returns "" on success, else why not.
boost::asio::awaitable<std::string> tcp_probe(std::string host, std::uint16_t port,
                                              std::string unix_socket,
                                              std::chrono::milliseconds timeout);

}  // namespace mtlsd::net
