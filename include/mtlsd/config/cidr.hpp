#pragma once
// IP addresses and CIDR ranges as plain values, parsed once at load time so that matching a
// connection's source against a range is a few byte comparisons (no parsing, no allocation).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace mtlsd::config {

// An IPv4 or IPv6 address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, what a dual-stack socket
// reports for an IPv4 client) are stored as the IPv4 address they carry, so one range matches
// a client whichever way the socket was opened.
struct ip_address {
  std::array<std::uint8_t, 16> bytes{};  // IPv4: the first 4 bytes, the rest zero
  bool v4 = false;
  bool operator==(const ip_address&) const = default;
};

struct cidr {
  ip_address base;   // host bits cleared
  int prefix = 0;    // 0..32 (IPv4) or 0..128 (IPv6)
  std::string text;  // as written, for messages
};

// "10.1.2.3", "::1", "::ffff:10.1.2.3", "fe80::1%eth0" (the zone is ignored), or nothing.
std::optional<ip_address> parse_ip(std::string_view text);
std::string format_ip(const ip_address& a);

// "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits set below the
// prefix ("10.0.0.1/8") are refused: they usually mean a typo. The error says what is wrong.
std::variant<cidr, std::string> parse_cidr(std::string_view text);

// IPv4 ranges match IPv4 addresses only, IPv6 ranges IPv6 only (127.0.0.1 is not ::1).
bool contains(const cidr& range, const ip_address& a);

}  // namespace mtlsd::config
