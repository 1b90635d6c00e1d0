#pragma once
// IP addresses and ranges (CIDR) for allowed_sources and accept_proxy_protocol.trusted_sources.
// A leaf like the rest of config/: plain values, no sockets. IPv4 is kept as IPv4 and an
// IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports) counts as the IPv4
// address it maps, so "10.0.0.0/8" matches a client seen on a [::]: listener.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mtlsd::config {

struct ip_address {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};  // IPv4: the first 4
  bool operator==(const ip_address&) const = default;
  std::string str() const;
};

struct cidr {
  ip_address base;          // host bits cleared
  int prefix = 0;           // 0..32 or 0..128
  std::string str() const;  // canonical "a.b.c.d/n"
  bool contains(const ip_address& a) const;
};

// "192.0.2.7", "2001:db8::1" (brackets allowed); IPv4-mapped IPv6 becomes IPv4.
std::optional<ip_address> parse_ip(std::string_view text);
// "10.0.0.0/8", "2001:db8::/32", or one address (a /32 or /128). Host bits set below the prefix
// are an error: "10.1.2.3/8" is almost always a typo for something else.
std::variant<cidr, std::string> parse_cidr(std::string_view text);

bool any_contains(const std::vector<cidr>& ranges, const ip_address& a);

}  // namespace mtlsd::config
