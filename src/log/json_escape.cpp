// append_json_escaped, append_field_value, append_fields and their parts (log/log.hpp): values,
// strings peers partly choose among them, made safe for a JSON or text log line.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>

#include "byte_classes.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::log {
namespace {

// The length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no overlong forms,
// no surrogates, nothing past U+10FFFF), or 0 when the byte there starts none.
std::size_t utf8_sequence_at(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = byte(0);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size() || byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((byte(k) & 0xC0) != 0x80) return 0;
  return n;
}

// Characters that change how the rest of a line is shown without being seen themselves: the
// line and paragraph separators (a viewer breaks the line there) and the bidirectional
// controls (a viewer shows what follows reversed, so a forged value can read as another).
bool is_layout_control(unsigned code) {
  return code == 0x061C || code == 0x200E || code == 0x200F || (code >= 0x2028 && code <= 0x202E) ||
         (code >= 0x2066 && code <= 0x2069);
}

// The code point of the well-formed two- or three-byte sequence at s[i].
unsigned code_point_at(std::string_view s, std::size_t i, std::size_t n) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  if (n == 2) return ((byte(0) & 0x1Fu) << 6) | (byte(1) & 0x3Fu);
  return ((byte(0) & 0x0Fu) << 12) | ((byte(1) & 0x3Fu) << 6) | (byte(2) & 0x3Fu);
}

void append_u_escape(std::string& out, unsigned code) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", code);
  out += buf;
}

}  // namespace

// Peers choose some of what is logged (an SNI, a header): what is not well-formed UTF-8 is
// written as U+FFFD, so every line stays valid JSON and text, and control characters (C0, DEL,
// C1, the line separators and bidirectional controls) are escaped, so none reaches a terminal
// or a log pipeline raw.
void append_json_escaped(std::string& out, std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    // Most of a value needs no escape: appended a run at a time, not a byte at a time.
    std::size_t plain = i;
    while (plain < s.size() && (detail::class_of(s[plain]) & detail::plain))
      ++plain;
    if (plain > i) {
      out.append(s.data() + i, plain - i);
      if (plain == s.size()) return;
      i = plain;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          append_u_escape(out, c);
        } else if (c < 0x80) {
          out += static_cast<char>(c);
        } else if (const std::size_t n = utf8_sequence_at(s, i); n == 0) {
          out += "\\ufffd";
        } else if (c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0) {
          append_u_escape(out, static_cast<unsigned char>(s[i + 1]));  // C1 control
          ++i;
        } else if (n <= 3 && is_layout_control(code_point_at(s, i, n))) {
          append_u_escape(out, code_point_at(s, i, n));
          i += n - 1;
        } else {
          out.append(s.substr(i, n));
          i += n - 1;
        }
    }
  }
}

namespace {

// A value needs quotes in text mode when it is empty or has spaces, quotes, '=', control
// characters or anything not ASCII (then append_json_escaped checks its UTF-8).
bool needs_quotes(std::string_view s) {
  if (s.empty()) return true;
  for (char c : s)
    if (!(detail::class_of(c) & detail::bare)) return true;
  return false;
}

// `v`, or its first field_value_limit bytes (not splitting a UTF-8 sequence) and how many more
// there were, kept in `storage`.
std::string_view cut_to_limit(std::string_view v, std::string& storage) {
  if (v.size() <= field_value_limit) return v;
  // Back over at most 3 continuation bytes (a UTF-8 sequence has at most 4 bytes): invalid
  // UTF-8, a run of them a peer may send, must not cut the value to nothing.
  std::size_t keep = field_value_limit;
  while (keep > field_value_limit - 3 && (static_cast<unsigned char>(v[keep]) & 0xC0) == 0x80)
    --keep;
  storage.assign(v.substr(0, keep));
  storage += "...(" + std::to_string(v.size() - keep) + " more bytes)";
  return storage;
}

}  // namespace

void append_string_value(std::string& out, std::string_view v, bool json) {
  switch (detail::form_of(detail::classes_of(v), v.size(), json)) {
    case detail::value_form::bare:  // most values: no byte to look at again
      out += v;
      return;
    case detail::value_form::quoted:
      out += '"';
      out += v;
      out += '"';
      return;
    case detail::value_form::escaped:
      break;
  }
  std::string storage;
  const std::string_view text = cut_to_limit(v, storage);
  if (json || needs_quotes(text)) {
    out += '"';
    append_json_escaped(out, text);
    out += '"';
  } else {
    out += text;
  }
}

void append_field_value(std::string& out, const field& f, bool json) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          append_string_value(out, v, json);
        } else if constexpr (std::is_same_v<T, null_value>) {
          out += json ? "null" : "\"\"";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          if (!std::isfinite(v)) {  // JSON has no inf/nan; text keeps the line parseable too
            out += json ? "null" : (std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
            return;
          }
          char buf[32];
          auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
          out.append(buf, ec == std::errc{} ? p : buf);
        } else {         // std::int64_t, std::uint64_t
          char buf[24];  // either has at most 20 characters
          const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
          out.append(buf, static_cast<std::size_t>((ec == std::errc{} ? end : buf) - buf));
        }
      },
      f.value);
}

void append_key(std::string& out, line_format format, std::string_view key) {
  if (format == line_format::json) {
    out += ",\"";
    append_json_escaped(out, key);
    out += "\":";
  } else {
    out += ' ';
    out += key;
    out += '=';
  }
}

void append_fields(std::string& out, line_format format, fields f) {
  for (const auto& x : f) {
    append_key(out, format, x.key);
    append_field_value(out, x, format == line_format::json);
  }
}

}  // namespace mtlsd::log
