#pragma once
// The one URL parser (Boost.URL): the health command, OCSP/CRL fetches, upstream checks and
// the proxy environment variables all parse through it. Only plain http:// is spoken: OCSP
// responses and CRLs are signed, so TLS adds nothing, RFC 5280/6960 distribution points are
// http:// anyway, and the health command talks to mtlsd's own loopback admin port.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mtlsd::net {

struct http_url {
  std::string host;         // without brackets for IPv6 literals
  std::uint16_t port = 80;  // 80 when absent
  std::string target;       // path and query, "/" when absent; the fragment is dropped
  std::string text;         // as given, for messages

  // "host[:port]" as the Host header and an absolute-form request spell it.
  std::string authority() const;
  // "http://authority/target": the request target when the request goes through a proxy.
  std::string absolute() const;
};

// Parses "http://host[:port][/path][?query]" (scheme case-insensitive). nullopt for any other
// scheme, credentials in the URL, a port outside 1-65535, or anything malformed; `why` (when
// given) then says which.
std::optional<http_url> parse_http_url(std::string_view text, std::string* why = nullptr);

}  // namespace mtlsd::net
