// Times in log lines: RFC 3339 in UTC, formatted without locks or allocation.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "mtlsd/log/log.hpp"

namespace mtlsd::log {

namespace {
// Writes `v` as `width` decimal digits (zero-padded, the low digits when `v` is wider).
char* put_digits(char* p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  return p + width;
}
}  // namespace

namespace {

// Milliseconds since the epoch: 64 bits of them span ±292 million years.
using sys_millis = std::chrono::sys_time<std::chrono::milliseconds>;

std::string_view format(char (&buf)[32], sys_millis t, bool millis) {
  // Calendar arithmetic rather than gmtime_r, which takes glibc's time-zone lock, and digits
  // written by hand rather than snprintf (a third of a line's formatting time): this runs for
  // every log line and up to three times per access line, on the workers.
  using namespace std::chrono;
  const auto since = t.time_since_epoch();
  const auto day = floor<days>(since);
  const year_month_day ymd{sys_days{day}};
  const hh_mm_ss hms{floor<milliseconds>(since - day)};
  const int y = static_cast<int>(ymd.year());
  if (y < 0 || y > 9999) {  // beyond RFC 3339's four digits: printed as before, unpadded
    const unsigned mo = static_cast<unsigned>(ymd.month());
    const unsigned d = static_cast<unsigned>(ymd.day());
    const auto h = static_cast<int>(hms.hours().count());
    const auto mi = static_cast<int>(hms.minutes().count());
    const auto sec = static_cast<int>(hms.seconds().count());
    const int n = millis
                      ? std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", y, mo,
                                      d, h, mi, sec, static_cast<int>(hms.subseconds().count()))
                      : std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, mo, d,
                                      h, mi, sec);
    return std::string_view(buf, std::clamp(n, 0, static_cast<int>(sizeof buf) - 1));
  }
  char* p = buf;
  p = put_digits(p, static_cast<unsigned>(y), 4);
  *p++ = '-';
  p = put_digits(p, static_cast<unsigned>(ymd.month()), 2);
  *p++ = '-';
  p = put_digits(p, static_cast<unsigned>(ymd.day()), 2);
  *p++ = 'T';
  p = put_digits(p, static_cast<unsigned>(hms.hours().count()), 2);
  *p++ = ':';
  p = put_digits(p, static_cast<unsigned>(hms.minutes().count()), 2);
  *p++ = ':';
  p = put_digits(p, static_cast<unsigned>(hms.seconds().count()), 2);
  if (millis) {
    *p++ = '.';
    p = put_digits(p, static_cast<unsigned>(hms.subseconds().count()), 3);
  }
  *p++ = 'Z';
  return std::string_view(buf, static_cast<std::size_t>(p - buf));
}

}  // namespace

std::string_view format_rfc3339(char (&buf)[32], std::chrono::system_clock::time_point t,
                                bool millis) {
  return format(buf, std::chrono::floor<std::chrono::milliseconds>(t), millis);
}

std::string_view format_rfc3339(char (&buf)[32], std::time_t t) {
  return format(buf, sys_millis{std::chrono::seconds{t}}, false);
}

std::string utc(std::time_t t) {
  char buf[32];
  return std::string(format_rfc3339(buf, t));
}

}  // namespace mtlsd::log
