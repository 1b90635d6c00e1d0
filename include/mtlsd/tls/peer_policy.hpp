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

// What the connection says about the peer besides its certificate, for allow rules.
struct peer_context {
  const config::ip_address* source = nullptr;  // null: not an IP connection (unix socket)
  // Server mode: the SNI the client sent; client mode: the name mtlsd sends. "" = none.
  std::string_view sni;
};

// Which part of `allow` admitted a peer: rule >= 0 is allow.rules[rule]; otherwise `flat` names
// the flat list (null when `allow` is empty and admits everyone).
struct policy_match {
  int rule = -1;
  const char* flat = nullptr;
};

struct policy_decision {
  bool allowed = true;
  std::string detail;  // why not, for the log and `mtlsd verify`
  policy_match match;
};

// An empty allow list admits every certificate that chains to the trust store. Otherwise the
// peer is admitted when ANY non-empty flat list matches (lists are alternatives, as ghostunnel's
// --allow-* flags are; each acts as a one-matcher rule) or ANY rule matches; a rule matches when
// EVERY matcher in it matches and NO matcher in its `not` does; a matcher (a list) matches when
// ANY of its entries does. Evaluation order, which decides what `match` reports: the flat lists
// (spiffe_ids, uri_sans, dns_sans, email_sans, common_names, organizational_units,
// sha256_fingerprints), then the rules in order; the first that matches wins. Admitting a peer
// allocates nothing; a refusal explains itself with the closest rule (the most matchers
// satisfied; the first such rule on a tie) and its first failing matcher. Fingerprints in
// `allow` must already be normalised (lower hex, no colons: config::load does that).
policy_decision evaluate(const config::allow_list& allow, const peer_identity& peer,
                         const peer_context& ctx = {});

// A short description of what admitted the peer, for `mtlsd verify` and logs:
// "rules[1] (spiffe_ids + source_cidrs, not sni)", "dns_sans (flat list)", "empty allow list".
std::string describe_match(const config::allow_list& allow, const policy_match& m);

}  // namespace mtlsd::tls
