#pragma once
// Structured logging on top of spdlog. A line is a message plus flat key/value fields, printed
// as `msg k=v k="v w"` in text mode or as one JSON object per line in json mode. spdlog has no
// JSON output of its own (its patterns do not escape), so the line is built here and spdlog only
// filters by level and writes.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

#include "mtlsd/log/line_format.hpp"

namespace mtlsd::log {

// A value not known (JSON null; "" in text, like an empty string).
struct null_value {};
inline constexpr null_value null{};

struct field {
  std::string_view key;
  // Unsigned integers apart: a counter above 2^63 (conn_id, byte counts) is printed as it is,
  // not through a signed value, where it would read negative.
  std::variant<std::string_view, std::int64_t, std::uint64_t, double, bool, null_value> value;

  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  template <class I>
  requires std::is_integral_v<I> &&(!std::is_same_v<I, bool>)field(std::string_view k, I v)
      : key(k) {
    if constexpr (std::is_signed_v<I>)
      value = static_cast<std::int64_t>(v);
    else
      value = static_cast<std::uint64_t>(v);
  }
  field(std::string_view k, double v) : key(k), value(v) {}
  field(std::string_view k, bool v) : key(k), value(v) {}
  field(std::string_view k, null_value v) : key(k), value(v) {}
};

using fields = std::initializer_list<field>;

// What setup() applies: the log.* keys the logger itself uses, as plain values (the daemon
// copies them out of config::log_options, so the log depends on nothing above it).
struct settings {
  std::string level = "info";  // spdlog level name: trace, debug, info, warn, error
  line_format format = line_format::text;
  // "" = stderr (with the events), "stdout", or a file (absolute): appended, reopened on SIGUSR1.
  std::string access_log_path;
};

// Configures the process logger: level, format and, the first time, where access lines go
// (access_log_path; a later change is warned about and waits for a restart). Safe to call
// again on reload.
void setup(const settings& options);
// Before the configuration is read: text on stderr at info.
void setup_default();

// The daemon's outputs. Until start_async() lines are written to stderr by the thread that logs
// (the CLI commands). After it, each output (stderr; the access-log file or stdout) has a
// bounded queue drained by its own writer thread, so a worker never waits on a slow or stuck
// reader: when a queue is full the line is dropped and counted (access_log.hpp), and stderr says
// so without waiting for another line: at once, then at most every 10 s per output, and when an
// output whose write failed writes again (stderr's own writer tells it). The access-log output
// named by setup() is opened here, not before: the threads start after the sandbox.
void start_async();
// Bounded final flush before exit: waits up to `limit` in all for the queues to be written,
// then stops the writers (one stuck in a write is left behind) and forgets the drop hook.
// True when nothing was lost.
bool finish(std::chrono::milliseconds limit);
// SIGUSR1 (logrotate): reopens the access-log file after the lines already queued; or opens it,
// when its open at start failed (a FIFO whose reader came later): access lines go there then.
void reopen();

bool enabled(spdlog::level::level_enum level);
void write(spdlog::level::level_enum level, std::string_view msg, fields f = {});

inline void trace(std::string_view msg, fields f = {}) {
  write(spdlog::level::trace, msg, f);
}
inline void debug(std::string_view msg, fields f = {}) {
  write(spdlog::level::debug, msg, f);
}
inline void info(std::string_view msg, fields f = {}) {
  write(spdlog::level::info, msg, f);
}
inline void warn(std::string_view msg, fields f = {}) {
  write(spdlog::level::warn, msg, f);
}
inline void error(std::string_view msg, fields f = {}) {
  write(spdlog::level::err, msg, f);
}

// For access_log.cpp: like write(), but the line goes to the access-log output.
void write_access_line(std::string_view msg, fields f);
// The same for a caller that appends the fields itself (access_log.cpp's request lines, whose
// connection's fields are rendered before): begin_access_line makes the line up to its fields,
// in `format` whatever log.format is now (the format of what was rendered before: a reload may
// change log.format meanwhile); end_access_line ends it and writes it.
std::string begin_access_line(line_format format, std::string_view msg);
void end_access_line(std::string line, line_format format);

// RFC 3339 in UTC ("2026-12-02T06:21:14.123Z" with `millis`, else "...14Z") into `buf`;
// returns the view of what was written. No allocation: for per-connection fields.
std::string_view format_rfc3339(char (&buf)[32], std::chrono::system_clock::time_point t,
                                bool millis);
// A certificate's or CRL's time, to the second. Not through system_clock::from_time_t: its
// nanoseconds end in 2262, and RFC 5280's "no expiry" (9999-12-31) overflowed (review).
std::string_view format_rfc3339(char (&buf)[32], std::time_t t);
// The same to the second, as a string: "2026-12-02T06:21:14Z", for times in messages.
std::string utc(std::time_t t);

// Escapes `s` as the body of a JSON string (no surrounding quotes).
void append_json_escaped(std::string& out, std::string_view s);
// Appends `f`'s value as a line of that format writes it (a string cut at field_value_limit,
// escaped; quoted when JSON, or in text when it needs quotes).
void append_field_value(std::string& out, const field& f, bool json);
// Appends the fields as a line of `format` writes them after its message, each with the
// separator before it (` key=value` in text, `,"key":value` in JSON).
void append_fields(std::string& out, line_format format, fields f);
// The parts append_fields writes a string field with, for a caller that writes its fields one
// by one (access_log.cpp): the key with its separators (` key=`, `,"key":`), then the value as
// append_field_value writes a string.
void append_key(std::string& out, line_format format, std::string_view key);
void append_string_value(std::string& out, std::string_view v, bool json);

// A string field of any line longer than this is cut (not splitting a UTF-8 sequence), with how
// many more bytes there were. Peers control some (a certificate's subject in a soft-fail
// warning's detail, up to the size of a certificate): a line longer than the log's queue would
// be dropped whole, losing the event. Access lines cut theirs shorter (access_field_limit).
inline constexpr std::size_t field_value_limit = 8 * 1024;

// The format lines are written in now (log.format); one atomic load, safe in a signal handler.
line_format current_line_format();

// Formats one line the way `write` would, without the timestamp (for tests).
std::string format_line(line_format format, spdlog::level::level_enum level, std::string_view msg,
                        fields f);

}  // namespace mtlsd::log
