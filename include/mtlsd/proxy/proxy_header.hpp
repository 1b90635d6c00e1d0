#pragma once
// Inbound PROXY protocol (haproxy's proxy-protocol.txt): the header a trusted balancer puts in
// front of a connection, v1 (text, section 2.1) or v2 (binary, section 2.2, decoded by
// proxy_protocol_decode.hpp). A pure function on the first bytes of a connection: it refuses
// anything malformed, never reads past what it was given, and says how much more it needs.
// Fuzzed (fuzz/proxy_header_fuzz.cpp).
#include <sys/socket.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace mtlsd::proxy {

// "PROXY UNKNOWN" + 92 bytes + CRLF: the longest v1 line the specification allows.
inline constexpr std::size_t proxy_v1_max_header = 107;
// Enough to tell v1 ("PROXY ") from v2 (its 12-byte signature starts "\r\n\r\n\0\r"), and no
// more than the shortest header of either ("PROXY UNKNOWN\r\n", 15 bytes): reading this many
// never consumes a byte of what follows the header.
inline constexpr std::size_t proxy_header_probe = 6;

struct inbound_proxy_header {
  enum class state {
    complete,    // a whole, valid header of `size` bytes
    incomplete,  // a valid prefix; v2: `size` is the total needed once known, else 0
    invalid,     // `error` says why
  };
  state status = state::incomplete;
  std::size_t size = 0;
  std::string error;
  int version = 0;  // 1 or 2 once the prefix tells
  // v1 UNKNOWN, v2 LOCAL (a balancer's own health check) or a v2 family without addresses:
  // no client address; the connection's own addresses stand.
  bool has_addresses = false;
  sockaddr_storage source{};
  sockaddr_storage destination{};
};

inbound_proxy_header parse_proxy_header(std::string_view bytes);

}  // namespace mtlsd::proxy
