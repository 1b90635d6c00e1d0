#include "mtlsd/proxy/proxy_header.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "mtlsd/proxy/proxy_protocol_decode.hpp"

namespace mtlsd::proxy {
namespace {

using state = inbound_proxy_header::state;

constexpr std::string_view v1_prefix = "PROXY ";

inbound_proxy_header invalid(int version, std::string why) {
  inbound_proxy_header h;
  h.status = state::invalid;
  h.version = version;
  h.error = std::move(why);
  return h;
}

// The next space-separated field of a v1 line (single spaces, as the specification writes).
std::string_view field(std::string_view& rest) {
  const auto sp = rest.find(' ');
  const auto f = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  return f;
}

bool parse_port(std::string_view s, std::uint16_t& out) {
  // 0..65535 in decimal, no sign, no leading zero (as the specification's grammar).
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v > 65535) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

bool parse_addr(std::string_view s, bool v6, std::uint16_t port, sockaddr_storage& out) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return false;
  const std::string text(s);
  out = {};
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    if (::inet_pton(AF_INET6, text.c_str(), &a.sin6_addr) != 1) return false;
    std::memcpy(&out, &a, sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (::inet_pton(AF_INET, text.c_str(), &a.sin_addr) != 1) return false;
    std::memcpy(&out, &a, sizeof a);
  }
  return true;
}

inbound_proxy_header parse_v1(std::string_view bytes) {
  // The line ends at its first CRLF. The first byte that can never be part of a line decides,
  // before the length does: a bare LF (a line ended without its CR), any other byte outside
  // printable ASCII. Only then is a line without its CRLF by 107 bytes too long.
  const std::size_t end = std::min(bytes.find("\r\n"), bytes.size());
  for (std::size_t i = v1_prefix.size(); i < std::min(end, proxy_v1_max_header); ++i) {
    const char c = bytes[i];
    if (c == '\n') return invalid(1, "PROXY v1 line ends in LF without CR");
    // A CR whose next byte has not come, or would be past 107 bytes (then too long, whatever it
    // is: the verdict never depends on a byte the reader does not take).
    if (c == '\r' && (i + 1 == bytes.size() || i + 1 == proxy_v1_max_header)) break;
    if (c < 0x20 || c > 0x7e) return invalid(1, "PROXY v1 line with a control character");
  }
  if (end == bytes.size()) {
    if (bytes.size() >= proxy_v1_max_header)
      return invalid(1, "PROXY v1 line longer than 107 bytes");
    inbound_proxy_header h;
    h.version = 1;
    return h;
  }
  if (end + 2 > proxy_v1_max_header) return invalid(1, "PROXY v1 line longer than 107 bytes");
  std::string_view line = bytes.substr(v1_prefix.size(), end - v1_prefix.size());
  inbound_proxy_header h;
  h.version = 1;
  h.status = state::complete;
  h.size = end + 2;
  const auto proto = field(line);
  if (proto == "UNKNOWN") return h;  // whatever follows is to be ignored
  if (proto != "TCP4" && proto != "TCP6")
    return invalid(1, "PROXY v1: unknown protocol '" + std::string(proto) + "'");
  const bool v6 = proto == "TCP6";
  const auto src = field(line);
  const auto dst = field(line);
  const auto sport = field(line);
  const auto dport = field(line);
  std::uint16_t sp = 0, dp = 0;
  if (!line.empty() || dport.empty())
    return invalid(
        1, "PROXY v1: expected '" + std::string(proto) + " SOURCE DESTINATION SPORT DPORT'");
  if (!parse_port(sport, sp) || !parse_port(dport, dp)) return invalid(1, "PROXY v1: invalid port");
  if (!parse_addr(src, v6, sp, h.source) || !parse_addr(dst, v6, dp, h.destination))
    return invalid(1, std::string("PROXY v1: invalid ") + (v6 ? "IPv6" : "IPv4") + " address");
  h.has_addresses = true;
  return h;
}

inbound_proxy_header parse_v2(std::string_view bytes) {
  const auto d = decode_proxy_v2_header(bytes);
  inbound_proxy_header h;
  h.version = 2;
  switch (d.status) {
    case proxy_v2_decoded::state::invalid:
      return invalid(2, "PROXY v2: " + d.error);
    case proxy_v2_decoded::state::incomplete:
      h.size = d.size;
      return h;
    case proxy_v2_decoded::state::complete:
      break;
  }
  h.status = state::complete;
  h.size = d.size;
  const auto fam = d.info.source.ss_family;
  h.has_addresses = !d.local && (fam == AF_INET || fam == AF_INET6);
  if (h.has_addresses) {
    h.source = d.info.source;
    h.destination = d.info.destination;
  }
  return h;
}

}  // namespace

inbound_proxy_header parse_proxy_header(std::string_view bytes) {
  const auto n1 = std::min(bytes.size(), v1_prefix.size());
  if (bytes.substr(0, n1) == v1_prefix.substr(0, n1) && n1 > 0) {
    if (bytes.size() < v1_prefix.size()) return inbound_proxy_header{};
    return parse_v1(bytes);
  }
  const auto n2 = std::min(bytes.size(), proxy_v2_signature.size());
  if (bytes.substr(0, n2) == proxy_v2_signature.substr(0, n2) && n2 > 0) {
    if (bytes.size() < 16) {
      inbound_proxy_header h;
      h.version = 2;
      return h;
    }
    return parse_v2(bytes);
  }
  if (bytes.empty()) return inbound_proxy_header{};
  return invalid(0, "the connection does not begin with a PROXY header");
}

}  // namespace mtlsd::proxy
