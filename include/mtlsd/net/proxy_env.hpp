#pragma once
// Forward proxies for outgoing fetches, configured the way curl and most tools read them from
// the environment: http_proxy / HTTP_PROXY for http:// URLs (lower case wins), https_proxy /
// HTTPS_PROXY for https:// URLs, and no_proxy / NO_PROXY for the hosts that go direct. mtlsd
// fetches only http:// URLs (OCSP, CRLs), so only the http proxy is ever used; the rest is
// parsed so that a mistake is reported rather than ignored.
//
// Read once when the daemon starts (the sandbox does not change the environment, but a
// running process cannot see a changed one either): a change needs a restart.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/net/url.hpp"

namespace mtlsd::net {

struct proxy_settings {
  std::optional<http_url> http;   // the proxy for http:// URLs
  std::string http_variable;      // the variable it came from, for messages
  std::optional<http_url> https;  // for https:// URLs (none are fetched today)
  std::string https_variable;
  std::vector<std::string> no_proxy;  // entries as given, lower-cased, trimmed

  // True when a request to `host` must go direct: no_proxy "*", the host itself, a domain it
  // is in ("example.org" and ".example.org" both cover a.example.org), an IP literal, or a
  // CIDR holding the host's IP literal. Names are compared case-insensitively; no DNS.
  bool bypass(std::string_view host) const;
  // The proxy for an http:// request to `host`, or nullptr to go direct.
  const http_url* for_http(std::string_view host) const;
};

// Reads the variables through `get` (std::getenv by default). Throws std::runtime_error naming
// the variable when one is set but unusable (not http://host:port, credentials, ...).
proxy_settings proxy_from_environment(const std::function<const char*(const char*)>& get =
                                          [](const char* n) {
                                            return static_cast<const char*>(std::getenv(n));
                                          });

// The settings revocation fetches use: set once by the daemon at start (before any fetch), read
// by the revocation thread. Empty settings (go direct) until set.
void set_fetch_proxy(proxy_settings s);
std::shared_ptr<const proxy_settings> fetch_proxy();

}  // namespace mtlsd::net
