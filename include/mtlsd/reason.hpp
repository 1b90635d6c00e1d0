#pragma once
// The one vocabulary for why a connection was refused: logs, the `reason` metric label and
// `mtlsd verify` all use these names, so they are an interface: dashboards and alerts match
// them (the README's "Logs" section lists them). Add a name; never rename one.
#include <array>
#include <optional>
#include <string_view>

namespace mtlsd {

enum class reason {
  no_client_cert,
  unknown_ca,
  expired,
  not_yet_valid,
  bad_signature,
  bad_key_usage,
  chain_too_long,
  revoked,
  revocation_unavailable,
  not_authorized,
  hostname_mismatch,
  handshake_timeout,
  protocol_error,
  upstream_unavailable,
  name_constraints,    // a CA's nameConstraints exclude (or do not permit) a name of the chain
  bad_certificate,     // a certificate breaks the RFC 5280 profile strict validation enforces
  over_capacity,       // max_connections, the pending-handshake cap, or out of file descriptors
  source_not_allowed,  // the client's address is outside listeners[].allowed_sources
  rate_limited,        // limits: connections_per_second, per source or per identity
  shutting_down,       // shutdown began before the client finished its TLS handshake
};

inline constexpr std::size_t reason_count = 20;

std::string_view to_string(reason r);
std::optional<reason> reason_from_string(std::string_view s);
const std::array<reason, reason_count>& all_reasons();

}  // namespace mtlsd
