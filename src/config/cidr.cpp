#include "mtlsd/config/cidr.hpp"

#include "mtlsd/config/address.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace mtlsd::config {

std::string ip_address::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return buf;
}

std::string cidr::str() const {
  return base.str() + "/" + std::to_string(prefix);
}

bool cidr::contains(const ip_address& a) const {
  if (a.v6 != base.v6) return false;
  const int full = prefix / 8;
  if (std::memcmp(a.bytes.data(), base.bytes.data(), static_cast<std::size_t>(full)) != 0)
    return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a.bytes[static_cast<std::size_t>(full)] & mask) ==
         base.bytes[static_cast<std::size_t>(full)];
}

std::optional<ip_address> parse_ip(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    text = text.substr(1, text.size() - 2);
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  ip_address a;
  if (::inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) return a;
  if (::inet_pton(AF_INET6, s.c_str(), a.bytes.data()) != 1) return std::nullopt;
  a.v6 = true;
  if (std::memcmp(a.bytes.data(), ipv4_mapped_prefix.data(), ipv4_mapped_prefix.size()) == 0) {
    std::array<std::uint8_t, 16> v4{};
    std::memcpy(v4.data(), a.bytes.data() + 12, 4);
    a.bytes = v4;
    a.v6 = false;
  }
  return a;
}

std::variant<cidr, std::string> parse_cidr(std::string_view text) {
  const auto slash = text.find('/');
  const auto ip = parse_ip(text.substr(0, slash));
  if (!ip) return std::string("not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)");
  cidr c;
  c.base = *ip;
  const int max = ip->v6 ? 128 : 32;
  c.prefix = max;
  if (slash != std::string_view::npos) {
    const auto len = text.substr(slash + 1);
    int n = -1;
    auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), n);
    if (ec != std::errc{} || p != len.data() + len.size() || len.empty() || n < 0 || n > max)
      return "invalid prefix length '" + std::string(len) + "' (0 to " + std::to_string(max) + ")";
    c.prefix = n;
  }
  // Host bits below the prefix must be zero.
  cidr masked = c;
  for (int bit = c.prefix; bit < max; ++bit)
    masked.base.bytes[static_cast<std::size_t>(bit / 8)] &=
        static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  if (!(masked.base == c.base)) return "host bits set: did you mean " + masked.str() + "?";
  return c;
}

bool any_contains(const std::vector<cidr>& ranges, const ip_address& a) {
  for (const auto& r : ranges)
    if (r.contains(a)) return true;
  return false;
}

}  // namespace mtlsd::config
