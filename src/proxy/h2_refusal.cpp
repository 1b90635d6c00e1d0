// The frames of an HTTP/2 connection refused before its first stream (session_state.hpp).
#include <boost/asio/buffer.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "session_state.hpp"

namespace mtlsd::proxy::detail {

namespace {
// RFC 9113 4.1: a 9-byte frame header (24-bit length, type, flags, 31-bit stream id).
void put_frame_header(std::string& out, std::uint32_t length, std::uint8_t type) {
  const std::uint8_t header[9] = {static_cast<std::uint8_t>(length >> 16),
                                  static_cast<std::uint8_t>(length >> 8),
                                  static_cast<std::uint8_t>(length),
                                  type,
                                  0,  // flags
                                  0,
                                  0,
                                  0,
                                  0};  // stream 0: both frames are about the connection
  out.append(reinterpret_cast<const char*>(header), sizeof header);
}

constexpr std::uint8_t frame_settings = 0x4;
constexpr std::uint8_t frame_goaway = 0x7;
// The debug data is for people reading a client's log; a long reason is cut, not refused.
constexpr std::size_t max_debug_data = 256;
}  // namespace

std::string h2_refusal_frames(std::uint32_t error_code, std::string_view why) {
  why = why.substr(0, max_debug_data);
  std::string out;
  out.reserve(9 + 9 + 8 + why.size());
  put_frame_header(out, 0, frame_settings);
  put_frame_header(out, static_cast<std::uint32_t>(8 + why.size()), frame_goaway);
  out.append(4, '\0');  // last stream id 0: none processed
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((error_code >> shift) & 0xff));
  out.append(why);
  return out;
}

asio::awaitable<void> goaway_if_h2(session& s, tls_stream& tls, std::uint32_t error_code,
                                   std::string_view why) {
  const auto& cfg = s.listener->cfg;
  if (!cfg.http.enabled || !speaks_h2(cfg, tls.native())) co_return;
  const std::string frames = h2_refusal_frames(error_code, why);
  co_await tls.write(asio::buffer(frames));  // a failure ends the connection all the same
}

}  // namespace mtlsd::proxy::detail
