#include "mtlsd/reason.hpp"

namespace mtlsd {
namespace {
constexpr std::array<std::string_view, reason_count> names = {
    "no_client_cert",         "unknown_ca",           "expired",           "not_yet_valid",
    "bad_signature",          "bad_key_usage",        "chain_too_long",    "revoked",
    "revocation_unavailable", "not_authorized",       "hostname_mismatch", "handshake_timeout",
    "protocol_error",         "upstream_unavailable", "name_constraints",  "bad_certificate",
    "over_capacity",          "source_not_allowed",   "rate_limited",      "shutting_down"};
}

std::string_view to_string(reason r) {
  return names[static_cast<std::size_t>(r)];
}

std::optional<reason> reason_from_string(std::string_view s) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == s) return static_cast<reason>(i);
  return std::nullopt;
}

const std::array<reason, reason_count>& all_reasons() {
  static const auto all = [] {
    std::array<reason, reason_count> a{};
    for (std::size_t i = 0; i < reason_count; ++i)
      a[i] = static_cast<reason>(i);
    return a;
  }();
  return all;
}

}  // namespace mtlsd
