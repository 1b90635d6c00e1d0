#include "mtlsd/proxy/h2_header_blocks.hpp"

#include <algorithm>

namespace mtlsd::proxy::h2 {
namespace {

constexpr std::uint8_t continuation_type = 0x9;
constexpr std::uint8_t end_headers_flag = 0x4;

}  // namespace

void header_block_scan::feed(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t* const end = data + size;
  const std::size_t preface = std::min(preface_left_, size);
  preface_left_ -= preface;
  data += preface;
  while (data < end) {
    if (payload_left_ > 0) {
      const auto n = static_cast<std::uint32_t>(
          std::min<std::size_t>(payload_left_, static_cast<std::size_t>(end - data)));
      payload_left_ -= n;
      data += n;
      continue;
    }
    header_[header_have_++] = *data++;
    if (header_have_ < frame_header_size) continue;
    header_have_ = 0;
    payload_left_ = (std::uint32_t{header_[0]} << 16) | (std::uint32_t{header_[1]} << 8) |
                    std::uint32_t{header_[2]};
    const std::uint8_t type = header_[3], flags = header_[4];
    block_frame_ = opens_block(type) || (type == continuation_type && block_open_);
    // The block stays open past this frame unless it says END_HEADERS; any other frame here is
    // a connection error nghttp2 ends the connection for.
    if (block_frame_) block_open_ = (flags & end_headers_flag) == 0;
  }
}

}  // namespace mtlsd::proxy::h2
