#pragma once
// The revocation service's only network client: one plain-HTTP request (OCSP POST, CRL GET)
// with a deadline and a cap on the response size. Plain http:// only — OCSP responses and CRLs
// are signed, so TLS adds nothing, and RFC 5280/6960 distribution points are http:// anyway.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mtlsd::tls::revocation {

struct http_url {
  std::string host;    // without brackets for IPv6 literals
  std::string port;    // "80" when absent
  std::string target;  // "/" when absent
  std::string text;    // as given, for messages
};

// Parses "http://host[:port][/path]". nullopt for any other scheme or a malformed URL.
std::optional<http_url> parse_http_url(std::string_view url);

struct http_request {
  bool post = false;
  std::string body;          // POST only
  std::string content_type;  // POST only
  std::string accept;
  // The whole exchange: DNS lookup (c-ares, cancelled with the rest when this passes),
  // connect, write, read.
  std::chrono::milliseconds timeout{2000};
  std::size_t max_body = 64 * 1024;
};

struct http_result {
  bool ok = false;    // a 200 response with a complete body within the limits
  std::string body;   // the response body when ok
  std::string error;  // why not, when !ok
};

// Runs on the caller's executor (an io_context: host names go to its net::resolver). Never
// throws for network errors.
boost::asio::awaitable<http_result> http_fetch(const http_url& url, http_request req);

}  // namespace mtlsd::tls::revocation
