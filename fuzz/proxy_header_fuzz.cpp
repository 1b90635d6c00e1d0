// Inbound PROXY headers (v1 text and v2 binary) as they arrive on an accept_proxy_protocol
// listener. The parser never crashes, never claims more bytes than it was given, decides the
// same on the header alone as with what follows it, and — as the socket reader feeds it — gives
// the same verdict whether the bytes come all at once or one at a time.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/proxy_header.hpp"
#include "mtlsd/proxy/proxy_protocol_decode.hpp"

using mtlsd::proxy::inbound_proxy_header;
using mtlsd::proxy::parse_proxy_header;
using state = inbound_proxy_header::state;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto h = parse_proxy_header(bytes);
  switch (h.status) {
    case state::invalid:
      mtlsd::fuzz::check(!h.error.empty(), "an invalid header says why");
      break;
    case state::incomplete:
      mtlsd::fuzz::check(h.size == 0 || h.size > bytes.size(), "incomplete asks for more");
      mtlsd::fuzz::check(h.size <= mtlsd::proxy::proxy_v2_max_header, "within the maximum");
      mtlsd::fuzz::check(h.version != 1 || bytes.size() < mtlsd::proxy::proxy_v1_max_header,
                         "a v1 line is complete or refused by 107 bytes");
      break;
    case state::complete: {
      mtlsd::fuzz::check(h.size > 0 && h.size <= bytes.size(), "the header lies in the input");
      mtlsd::fuzz::check(h.version == 1 || h.version == 2, "a known version");
      const auto again = parse_proxy_header(bytes.substr(0, h.size));
      mtlsd::fuzz::check(again.status == state::complete && again.size == h.size &&
                             again.has_addresses == h.has_addresses,
                         "the header alone decodes the same");
      mtlsd::fuzz::check(!h.has_addresses || h.source.ss_family == h.destination.ss_family,
                         "both addresses of one family");
      break;
    }
  }
  // Every proper prefix of a complete header is incomplete, never invalid (the reader stops
  // at the first verdict that is not incomplete).
  if (h.status == state::complete && h.size <= 600) {
    for (std::size_t n = 1; n < h.size; ++n)
      mtlsd::fuzz::check(parse_proxy_header(bytes.substr(0, n)).status == state::incomplete,
                         "a prefix of a valid header is incomplete");
  }
  return 0;
}
