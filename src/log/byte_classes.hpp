#pragma once
// What each byte of a string value asks of a log line (json_escape.cpp, access_log.cpp's request
// lines): looked up rather than compared, as this runs for every byte of every string field of
// every line.
#include <array>
#include <cstddef>
#include <string_view>

#include "mtlsd/log/log.hpp"

namespace mtlsd::log::detail {

enum byte_class : unsigned char {
  plain = 1,  // printable ASCII that JSON writes as it is (all but '"' and '\\')
  bare = 2,   // ... that text writes unquoted too (all but ' ' and '=')
  any = plain | bare,
};

inline constexpr auto byte_classes = [] {
  std::array<unsigned char, 256> t{};
  for (unsigned c = 0x20; c < 0x7f; ++c) {
    if (c == '"' || c == '\\') continue;
    t[c] = (c == ' ' || c == '=') ? plain : any;
  }
  return t;
}();

inline unsigned char class_of(char c) {
  return byte_classes[static_cast<unsigned char>(c)];
}

// The classes all bytes of `v` have: what append_string_value needs to know of it.
inline unsigned char classes_of(std::string_view v) {
  unsigned char classes = any;
  for (char c : v)
    classes &= class_of(c);
  return classes;
}

// How append_string_value writes a value of `size` bytes whose bytes all have `classes`
// (classes_of): as it is, between quotes as it is, or escaped (and cut at field_value_limit).
enum class value_form { bare, quoted, escaped };
inline value_form form_of(unsigned char classes, std::size_t size, bool json) {
  if (size > field_value_limit || !(classes & plain)) return value_form::escaped;
  return json || size == 0 || !(classes & bare) ? value_form::quoted : value_form::bare;
}

}  // namespace mtlsd::log::detail
