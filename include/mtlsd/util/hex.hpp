#pragma once
// Lower-case hex of raw bytes (fingerprints, content digests, PKCS#11 ids in messages).
#include <cstddef>
#include <string>
#include <string_view>

namespace mtlsd::util {

inline std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 0xf];
  }
  return out;
}

inline std::string hex(std::string_view bytes) {
  return hex(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

}  // namespace mtlsd::util
