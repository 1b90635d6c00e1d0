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

// Up to the seconds ("2026-12-02T06:21:14"): 19 characters.
constexpr std::size_t kToSeconds = 19;

// The second this thread formatted last, as written: a line's timestamp and an HTTP request's
// start are nearly always in the same second, and so are the lines of a busy second, which then
// cost a copy rather than the calendar arithmetic. seccomp_report.cpp's SIGSYS handler formats
// too; that signal comes on a system call, and format() makes none, so the handler never finds
// this half-written (constant-initialized: no guard to run either).
struct formatted_second {
  std::chrono::sys_seconds at = std::chrono::sys_seconds::min();
  char text[kToSeconds];
};
thread_local formatted_second last_second;

std::string_view format(char (&buf)[32], sys_millis t, bool millis) {
  // Calendar arithmetic rather than gmtime_r, which takes glibc's time-zone lock, and digits
  // written by hand rather than snprintf (a third of a line's formatting time): this runs for
  // every log line and up to three times per access line, on the workers.
  using namespace std::chrono;
  const auto second = floor<seconds>(t);
  const auto subseconds = static_cast<unsigned>((t - second).count());
  char* p = buf;
  if (second == last_second.at) {
    p = std::copy_n(last_second.text, kToSeconds, p);
  } else {
    const auto since = t.time_since_epoch();
    const auto day = floor<days>(since);
    const year_month_day ymd{sys_days{day}};
    const hh_mm_ss hms{floor<seconds>(since - day)};
    const int y = static_cast<int>(ymd.year());
    if (y < 0 || y > 9999) {  // beyond RFC 3339's four digits: printed as before, unpadded
      const unsigned mo = static_cast<unsigned>(ymd.month());
      const unsigned d = static_cast<unsigned>(ymd.day());
      const auto h = static_cast<int>(hms.hours().count());
      const auto mi = static_cast<int>(hms.minutes().count());
      const auto sec = static_cast<int>(hms.seconds().count());
      const int n = millis ? std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03uZ",
                                           y, mo, d, h, mi, sec, subseconds)
                           : std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, mo,
                                           d, h, mi, sec);
      return std::string_view(buf, std::clamp(n, 0, static_cast<int>(sizeof buf) - 1));
    }
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
    std::copy_n(buf, kToSeconds, last_second.text);
    last_second.at = second;
  }
  if (millis) {
    *p++ = '.';
    p = put_digits(p, subseconds, 3);
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
