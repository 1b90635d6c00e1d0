#pragma once
// Who may connect: the `allow` lists, as pure functions over a peer_identity.
#include <string>
#include <string_view>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/identity.hpp"

namespace mtlsd::tls {

// "spiffe://td/ns/a" matches itself only; "spiffe://td/ns/*" matches every ID under
// "spiffe://td/ns/" (at least one more character), but not "spiffe://td/ns" itself.
bool match_spiffe_id(std::string_view pattern, std::string_view id);

// Case-insensitive exact match, or "*.example.org" matching exactly one more label
// ("a.example.org", not "example.org" nor "a.b.example.org"), as in RFC 6125 host matching.
bool match_dns_name(std::string_view pattern, std::string_view name);

// RFC 5280 rfc822Name comparison: the local part exactly, the domain case-insensitively.
bool match_email(std::string_view pattern, std::string_view email);

struct policy_decision {
  bool allowed = true;
  std::string detail;  // why not, for the log and `mtlsd verify`
};

// An empty allow list admits every certificate that chains to the trust store. Otherwise the peer
// is admitted when ANY entry of ANY list matches (lists are alternatives, as ghostunnel's
// --allow-* flags are). Fingerprints in `allow` must already be normalised (lower hex, no colons:
// config::load does that).
policy_decision evaluate(const config::allow_list& allow, const peer_identity& peer);

}  // namespace mtlsd::tls
