#pragma once
// Whether a client's HTTP/2 byte stream is inside a header block, read from the frame headers
// alone, beside nghttp2: for http.request_headers_timeout (idle_deadline::start_head). nghttp2
// cannot say: a block it decided to ignore (a refused or closed stream, a field it rejected, a
// stream id it will not take) is read to its end without a callback, and such a block, sent a
// byte at a time, would otherwise hold the connection for as long as each byte came within the
// idle timeout.
//
// A header block is a HEADERS or PUSH_PROMISE frame and, without END_HEADERS, the CONTINUATION
// frames that follow, up to one with END_HEADERS (RFC 9113 4.3, 6.10). Nothing is validated here
// (nghttp2 does): the scan only keeps count of frame boundaries.
#include <cstddef>
#include <cstdint>

namespace mtlsd::proxy::h2 {

class header_block_scan {
 public:
  // The next bytes the client sent, the connection preface first.
  void feed(const std::uint8_t* data, std::size_t size);
  // Inside a header block: a frame of one is incomplete (its nine-byte frame header too, once
  // its type is in), or one without END_HEADERS has ended and the CONTINUATION that ends the
  // block has not.
  bool in_header_block() const {
    return block_open_ || (payload_left_ > 0 && block_frame_) ||
           (header_have_ > type_offset && opens_block(header_[type_offset]));
  }

 private:
  static constexpr std::size_t preface_size = 24, frame_header_size = 9, type_offset = 3;
  static constexpr bool opens_block(std::uint8_t type) { return type == 0x1 || type == 0x5; }
  std::size_t preface_left_ = preface_size;
  std::uint8_t header_[frame_header_size] = {};
  std::size_t header_have_ = 0;
  std::uint32_t payload_left_ = 0;
  bool block_frame_ = false;  // the frame being read is HEADERS, PUSH_PROMISE or CONTINUATION
  bool block_open_ = false;   // a block frame without END_HEADERS ended; its CONTINUATION is due
};

}  // namespace mtlsd::proxy::h2
