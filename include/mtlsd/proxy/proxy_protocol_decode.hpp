#pragma once
// PROXY protocol v2 decoding (haproxy's proxy-protocol.txt, section 2.2): the inverse of
// build_proxy_v2_header, as a pure function on bytes. It is what an inbound-PROXY listener runs
// on the first bytes of a connection from a trusted load balancer, so it must refuse anything
// malformed and never read past what it was given. Fuzzed (fuzz/proxy_v2_fuzz.cpp).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mtlsd/proxy/proxy_protocol.hpp"

namespace mtlsd::proxy {

// The longest v2 header: 16 fixed bytes plus a 16-bit length.
inline constexpr std::size_t proxy_v2_max_header = 16 + 0xffff;

struct proxy_v2_decoded {
  enum class state {
    complete,    // a whole, valid header: `size` bytes of the input
    incomplete,  // a valid prefix: read at least `size` bytes in total, then decode again
    invalid,     // not a PROXY v2 header, or a malformed one: `error` says why
  };
  state status = state::incomplete;
  std::size_t size = 0;
  std::string error;
  // When complete. LOCAL (health checks from the balancer itself) carries no client: use the
  // connection's own addresses. Addresses are set only for PROXY with a known family (else
  // their ss_family is AF_UNSPEC); the TLVs are decoded for both commands.
  bool local = false;
  std::uint8_t family = 0;  // the raw address-family/transport byte: 0x00, 0x11, ... 0x32
  proxy_v2_info info;
};

// Decodes the header at the start of `bytes`. The TLV problems that make it invalid: a TLV (or
// an SSL sub-TLV) overrunning its block, a CRC32C TLV not 4 bytes long or not matching, a
// UNIQUE_ID over 128 bytes, an SSL TLV under 5 bytes, and one of the specification's own types
// twice (ALPN, AUTHORITY, CRC32C, UNIQUE_ID, SSL, NETNS; SSL sub-TLVs 0x21-0x25). Any other
// type is skipped, repeated or not (custom 0xE0-0xEF included; of mtlsd's own, the first counts).
// PP2_TYPE_SSL maps to client_cert (either client-certificate bit), resumed (the session bit),
// verified (verify == 0 with a certificate); mtlsd's comma-separated SAN TLVs are split on ','.
proxy_v2_decoded decode_proxy_v2_header(std::string_view bytes);

}  // namespace mtlsd::proxy
