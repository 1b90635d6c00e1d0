#include "mtlsd/config/address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <strings.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <optional>

namespace mtlsd::config {

std::string address::str() const {
  if (type == kind::unix_socket) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::variant<address, std::string> parse_address(std::string_view text) {
  constexpr std::string_view unix_prefix = "unix:";
  if (text.substr(0, unix_prefix.size()) == unix_prefix) {
    std::string path(text.substr(unix_prefix.size()));
    if (path.empty())
      return std::string("unix socket address needs a path, e.g. unix:/run/app.sock");
    if (path.size() > max_unix_path)
      return "unix socket path is longer than " + std::to_string(max_unix_path) + " bytes";
    return address{address::kind::unix_socket, {}, 0, path};
  }
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return std::string("missing ']' in IPv6 address; expected [IPV6]:PORT");
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':')
      return std::string("expected ':PORT' after ']'");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return std::string("expected HOST:PORT, [IPV6]:PORT or unix:/path");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos)
      return std::string("IPv6 addresses must be written in brackets: [IPV6]:PORT");
    port = text.substr(colon + 1);
  }
  if (host.empty()) return std::string("missing host; use 0.0.0.0 or [::] for all addresses");
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || ptr != port.data() + port.size() || value > 65535)
    return "invalid port '" + std::string(port) + "': expected a number from 0 to 65535";
  return address{address::kind::tcp, std::string(host), static_cast<std::uint16_t>(value), {}};
}

namespace {

struct ip_literal {
  bool v6 = false;
  std::array<unsigned char, 16> bytes{};
  bool unspecified() const {
    for (const auto b : bytes)
      if (b != 0) return false;
    return true;
  }
  unsigned scope = 0;  // an IPv6 zone's interface index (fe80::1%eth0 or %2)
  bool operator==(const ip_literal&) const = default;
};

// As the kernel takes the address when it is bound (and format_endpoint shows it): an
// IPv4-mapped IPv6 address is the IPv4 one, and a zone names its interface by name or number
// (review: both kinds passed check as host names, and the bind then failed).
std::optional<ip_literal> ip_of(const std::string& host) {
  ip_literal ip;
  if (::inet_pton(AF_INET, host.c_str(), ip.bytes.data()) == 1) return ip;
  const auto percent = host.find('%');
  const std::string bare = host.substr(0, percent);
  ip.v6 = true;
  if (::inet_pton(AF_INET6, bare.c_str(), ip.bytes.data()) != 1) return std::nullopt;
  if (percent != std::string::npos) {
    const std::string zone = host.substr(percent + 1);
    unsigned index = 0;
    const auto [end, ec] = std::from_chars(zone.data(), zone.data() + zone.size(), index);
    if (ec != std::errc{} || end != zone.data() + zone.size())
      index = ::if_nametoindex(zone.c_str());
    if (index == 0) return std::nullopt;  // no such interface: the bind will say so
    ip.scope = index;
  }
  if (std::equal(ipv4_mapped_prefix.begin(), ipv4_mapped_prefix.end(), ip.bytes.begin())) {
    ip_literal v4;
    std::copy(ip.bytes.begin() + 12, ip.bytes.end(), v4.bytes.begin());
    return v4;
  }
  return ip;
}

}  // namespace

std::string host_as_named(const std::string& host) {
  const std::string bare = host.substr(0, host.find('%'));
  std::array<unsigned char, 16> bytes{};
  if (::inet_pton(AF_INET6, bare.c_str(), bytes.data()) != 1) return host;
  if (!std::equal(ipv4_mapped_prefix.begin(), ipv4_mapped_prefix.end(), bytes.begin())) return bare;
  char v4[INET_ADDRSTRLEN];
  return ::inet_ntop(AF_INET, bytes.data() + 12, v4, sizeof v4) ? std::string(v4) : bare;
}

bool may_overlap(const address& a, const address& b) {
  namespace fs = std::filesystem;
  if (a.is_unix() || b.is_unix())
    return a.is_unix() && b.is_unix() &&
           fs::path(a.path).lexically_normal() == fs::path(b.path).lexically_normal();
  if (a.port == 0 || a.port != b.port) return false;
  if (::strcasecmp(a.host.c_str(), b.host.c_str()) == 0) return true;
  const auto x = ip_of(a.host), y = ip_of(b.host);
  if (!x || !y) return false;
  const auto covers = [](const ip_literal& wide, const ip_literal& other) {
    return wide.unspecified() && wide.scope == 0 && (wide.v6 || !other.v6);
  };
  return *x == *y || covers(*x, *y) || covers(*y, *x);
}

std::string socket_directory_problem(const address& a) {
  namespace fs = std::filesystem;
  if (!a.is_unix()) return {};
  const fs::path dir = fs::path(a.path).parent_path();
  std::error_code ec;
  const auto st = fs::status(dir, ec);
  if (!fs::exists(st)) return "the directory " + dir.string() + " does not exist";
  if (!fs::is_directory(st)) return dir.string() + " is not a directory";
  return {};
}

}  // namespace mtlsd::config
