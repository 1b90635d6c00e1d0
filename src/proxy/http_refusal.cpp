// What the client of an http: listener refused after its handshake is told (session_state.hpp).
#include <nghttp2/nghttp2.h>

#include <boost/asio/buffer.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "http1_io.hpp"
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

// The debug data is for people reading a client's log; a long reason is cut, not refused.
constexpr std::size_t max_debug_data = 256;

bool http_listener(const session& s) {
  // Only server-mode listeners have an http: block (config validation); said here too, since
  // a client-mode listener's peer is a server, to which a server preface would be nonsense.
  const auto& cfg = s.listener->cfg;
  return cfg.http.enabled && cfg.mode == config::listener_mode::server;
}
}  // namespace

std::string h2_refusal_frames(std::uint32_t error_code, std::string_view why) {
  why = why.substr(0, max_debug_data);
  std::string out;
  out.reserve(9 + 9 + 8 + why.size());
  put_frame_header(out, 0, NGHTTP2_SETTINGS);
  put_frame_header(out, static_cast<std::uint32_t>(8 + why.size()), NGHTTP2_GOAWAY);
  out.append(4, '\0');  // last stream id 0: none processed
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((error_code >> shift) & 0xff));
  out.append(why);
  return out;
}

asio::awaitable<void> goaway_if_h2(session& s, tls_stream& tls, std::uint32_t error_code,
                                   std::string_view why) {
  if (!http_listener(s) || !speaks_h2(s.listener->cfg, tls.native())) co_return;
  const std::string frames = h2_refusal_frames(error_code, why);
  // A failure ends the connection all the same. What went is counted as sent to the client
  // (tx_bytes; http: listeners are server mode, where that is relayed.from_plain).
  if (!co_await tls.write(asio::buffer(frames))) s.relayed.from_plain += frames.size();
}

asio::awaitable<bool> answer_connect_refused(session& s, tls_stream& tls) {
  if (!http_listener(s)) co_return false;
  // Out of descriptors for the upstream socket is our capacity, not the upstream's failure.
  const bool ours = s.refusal == reason::over_capacity;
  std::string answer;
  if (speaks_h2(s.listener->cfg, tls.native()))
    answer = h2_refusal_frames(NGHTTP2_NO_ERROR, ours ? "over capacity" : "upstream unavailable");
  else
    answer = ours ? http1::simple_response(503, "Service Unavailable", "Service Unavailable")
                  : http1::simple_response(502, "Bad Gateway", "Bad Gateway");
  if (!co_await tls.write(asio::buffer(answer))) s.relayed.from_plain += answer.size();
  co_return true;
}

}  // namespace mtlsd::proxy::detail
