// The `--at TIME` argument of `mtlsd verify` (cli::parse_time, src/cli/verify.cpp), on arbitrary
// text: the time a certificate chain is judged at, which the operator must get exactly as
// written or not at all. Properties, against a model written here: the text is accepted exactly
// when it is `@` and decimal digits (no sign, no space) whose value fits in a long long, which is
// then the result, or RFC 3339 with every field full width (YYYY-MM-DD, `T`, `t` or a space,
// hh:mm:ss, a fraction of one digit or more, `Z`, `z` or +hh:mm/-hh:mm) and a real date (the
// month's days, 29 February in leap years only), hour <= 23, minute <= 59, second <= 60 and an
// offset within 23:59; formatted back (gmtime_r of the result plus the offset), an accepted
// RFC 3339 time gives the same fields (second 60 is the next minute's second 0, as timegm counts
// it), over years 0000-9999 and offsets that cross year 0; never a crash, an exception or UB.
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <limits>
#include <optional>
#include <string_view>

#include "fuzz_support.hpp"
#include "mtlsd/cli/cli.hpp"

using namespace mtlsd;

namespace {

// Exactly `n` ASCII digits at s[pos...], else -1.
int field(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (const char c : s.substr(pos, n)) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

// "@" and digits: their value, when it fits in a long long.
std::optional<long long> epoch_model(std::string_view s) {
  if (s.size() < 2 || s.front() != '@') return std::nullopt;
  s.remove_prefix(1);
  if (s.find_first_not_of("0123456789") != s.npos) return std::nullopt;
  unsigned __int128 v = 0;
  for (const char c : s) {
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > static_cast<unsigned __int128>(std::numeric_limits<long long>::max()))
      return std::nullopt;
  }
  return static_cast<long long>(v);
}

struct date_time {
  int year, month, day, hour, minute, second;
  long long offset;  // seconds east of UTC
};

std::optional<date_time> rfc3339_model(std::string_view s) {
  date_time t{field(s, 0, 4),
              field(s, 5, 2),
              field(s, 8, 2),
              field(s, 11, 2),
              field(s, 14, 2),
              field(s, 17, 2),
              0};
  if (t.year < 0 || t.month < 0 || t.day < 0 || t.hour < 0 || t.minute < 0 || t.second < 0)
    return std::nullopt;
  if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':') return std::nullopt;
  if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return std::nullopt;
  const bool leap = t.year % 400 == 0 || (t.year % 4 == 0 && t.year % 100 != 0);
  const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (t.month < 1 || t.month > 12 || t.day < 1 || t.day > days[t.month - 1] || t.hour > 23 ||
      t.minute > 59 || t.second > 60)
    return std::nullopt;
  std::string_view zone = s.substr(19);
  if (zone.starts_with('.')) {
    const std::size_t end = zone.find_first_not_of("0123456789", 1);
    if (end == 1) return std::nullopt;
    zone.remove_prefix(end == zone.npos ? zone.size() : end);
  }
  if (zone == "Z" || zone == "z") return t;
  if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') || zone[3] != ':') return std::nullopt;
  const int oh = field(zone, 1, 2), om = field(zone, 4, 2);
  if (oh < 0 || om < 0 || oh > 23 || om > 59) return std::nullopt;
  t.offset = (zone[0] == '-' ? -1 : 1) * (oh * 3600LL + om * 60LL);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Straight from libFuzzer's buffer, which ends where the input does: a read past the text is
  // an ASan report.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<long long> got;
  try {
    got = cli::parse_time(text);
  } catch (...) {
    fuzz::check(false, "parse_time throws nothing");
  }

  if (!text.empty() && text.front() == '@') {
    const auto want = epoch_model(text);
    fuzz::check(got.has_value() == want.has_value(),
                "@EPOCH is accepted exactly when it is digits that fit in a long long");
    if (got) fuzz::check(*got == *want, "@EPOCH is the number written");
    return 0;
  }
  const auto want = size >= 19 ? rfc3339_model(text) : std::nullopt;
  fuzz::check(got.has_value() == want.has_value(),
              "accepted exactly when full-width RFC 3339 with a real date, time and offset");
  if (!got) return 0;
  // Local time back from the result. Second 60 is counted as the next minute's second 0
  // (timegm), so its second 59 is one second before.
  const bool leap_second = want->second == 60;
  const std::time_t local = static_cast<std::time_t>(*got + want->offset - (leap_second ? 1 : 0));
  std::tm tm{};
  fuzz::check(gmtime_r(&local, &tm) != nullptr, "the result can be formatted back");
  fuzz::check(tm.tm_year + 1900 == want->year && tm.tm_mon + 1 == want->month &&
                  tm.tm_mday == want->day && tm.tm_hour == want->hour &&
                  tm.tm_min == want->minute && tm.tm_sec == want->second - (leap_second ? 1 : 0),
              "formatted back with its offset, the result gives the date and time written");
  return 0;
}
