#include "mtlsd/config/address.hpp"

#include <charconv>

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

}  // namespace mtlsd::config
