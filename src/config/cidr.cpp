#include "mtlsd/config/cidr.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace mtlsd::config {

std::optional<ip_address> parse_ip(std::string_view text) {
  if (auto pct = text.find('%'); pct != std::string_view::npos) text = text.substr(0, pct);
  if (text.empty() || text.size() > 63) return std::nullopt;
  char buf[64];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  ip_address a;
  if (inet_pton(AF_INET, buf, a.bytes.data()) == 1) {
    a.v4 = true;
    return a;
  }
  if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
  static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.bytes.data(), mapped, sizeof mapped) == 0) {
    std::memmove(a.bytes.data(), a.bytes.data() + 12, 4);
    std::memset(a.bytes.data() + 4, 0, 12);
    a.v4 = true;
  }
  return a;
}

std::string format_ip(const ip_address& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(a.v4 ? AF_INET : AF_INET6, a.bytes.data(), buf, sizeof buf);
  return buf;
}

std::variant<cidr, std::string> parse_cidr(std::string_view text) {
  cidr out;
  out.text = std::string(text);
  const auto slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  if (host.find('%') != std::string_view::npos) return std::string("a zone (%) is not allowed");
  // A mapped range written in IPv6 (::ffff:10.0.0.0/104) is the IPv4 range it covers.
  const bool written_v6 = host.find(':') != std::string_view::npos;
  auto ip = parse_ip(host);
  if (!ip) return "'" + std::string(host) + "' is not an IPv4 or IPv6 address";
  out.base = *ip;
  const int max = ip->v4 ? 32 : 128;
  if (slash == std::string_view::npos) {
    out.prefix = max;
    return out;
  }
  const std::string_view len = text.substr(slash + 1);
  int prefix = -1;
  auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
  const int written_max = written_v6 ? 128 : 32;
  if (len.empty() || ec != std::errc{} || p != len.data() + len.size() || prefix < 0 ||
      prefix > written_max)
    return "prefix length '" + std::string(len) + "' is not a number from 0 to " +
           std::to_string(written_max);
  if (written_v6 && ip->v4) {
    if (prefix < 96) return std::string("an IPv4-mapped range needs a prefix of at least 96");
    prefix -= 96;
  }
  out.prefix = prefix;
  for (int bit = prefix; bit < max; ++bit) {
    if (out.base.bytes[static_cast<std::size_t>(bit / 8)] & (0x80 >> (bit % 8)))
      return "host bits are set below the /" + std::string(len) +
             " prefix (did you mean the network address?)";
  }
  return out;
}

bool contains(const cidr& range, const ip_address& a) {
  if (range.base.v4 != a.v4) return false;
  const int full = range.prefix / 8, rest = range.prefix % 8;
  if (std::memcmp(range.base.bytes.data(), a.bytes.data(), static_cast<std::size_t>(full)) != 0)
    return false;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff00 >> rest);
  const auto i = static_cast<std::size_t>(full);
  return (range.base.bytes[i] & mask) == (a.bytes[i] & mask);
}

}  // namespace mtlsd::config
