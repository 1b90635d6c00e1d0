#include "mtlsd/config/duration.hpp"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

namespace mtlsd::config {

namespace {

// parse_duration, and whether a refusal was for the cap alone (`too_long`, when given).
std::optional<duration> parse(std::string_view text, bool* too_long) {
  if (text == "0") return duration{0};
  if (text.empty()) return std::nullopt;
  std::int64_t total_ms = 0;
  bool over = false;  // a part, or the sum so far, passed max_duration
  std::size_t i = 0;
  while (i < text.size()) {
    // A number (integer or decimal), then a unit; repeated ("1m30s").
    std::size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
      ++i;
    if (i == start) return std::nullopt;
    std::string number(text.substr(start, i - start));
    std::size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])))
      ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    double scale = 0;
    if (unit == "ms")
      scale = 1;
    else if (unit == "s")
      scale = 1000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "h")
      scale = 3'600'000;
    else
      return std::nullopt;
    double value = 0;
    try {
      std::size_t used = 0;
      value = std::stod(number, &used);
      if (used != number.size()) return std::nullopt;
    } catch (const std::out_of_range&) {
      // Too many digits for a double: past the cap if any of its whole part is not zero, else
      // a fraction too small to matter. Malformed all the same with a second '.' (stod throws
      // before saying how much it used; second read).
      if (number.find('.') != number.rfind('.')) return std::nullopt;
      const auto whole = number.substr(0, number.find('.'));
      value = whole.find_first_not_of('0') == std::string::npos
                  ? 0
                  : std::numeric_limits<double>::infinity();
    } catch (...) {
      return std::nullopt;
    }
    const double ms = value * scale;
    // The cap holds for the sum too ("596523h596523h..."). The rest of the text is still read:
    // a refusal is for the cap alone only if nothing else is wrong with it.
    constexpr double cap_ms = static_cast<double>(max_duration.count());
    if (ms > cap_ms || static_cast<double>(total_ms) + ms > cap_ms)
      over = true;
    else
      total_ms += static_cast<std::int64_t>(ms + 0.5);
  }
  if (over) {
    if (too_long) *too_long = true;
    return std::nullopt;
  }
  return duration{total_ms};
}

}  // namespace

std::optional<duration> parse_duration(std::string_view text) {
  return parse(text, nullptr);
}

bool duration_too_long(std::string_view text) {
  bool too_long = false;
  return !parse(text, &too_long) && too_long;
}

std::string format_duration(duration d) {
  const auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms < 1000) return std::to_string(ms) + "ms";
  // Seconds with the millisecond fraction, trailing zeros trimmed: 1500ms -> "1.5s".
  std::string out = std::to_string(ms / 1000);
  if (const auto frac = ms % 1000) {
    char buf[8];
    std::snprintf(buf, sizeof buf, ".%03d", static_cast<int>(frac));
    std::string f(buf);
    while (f.back() == '0')
      f.pop_back();
    out += f;
  }
  return out + "s";
}

}  // namespace mtlsd::config
