#include "mtlsd/log/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>

namespace mtlsd::log {
namespace {

std::atomic<config::log_format> current_format{config::log_format::text};

std::string_view level_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

// A value needs quotes in text mode when it is empty or has spaces, quotes or '='.
bool needs_quotes(std::string_view s) {
  if (s.empty()) return true;
  for (char c : s)
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  return false;
}

void append_value(std::string& out, const field& f, bool json) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          if (json || needs_quotes(v)) {
            out += '"';
            append_json_escaped(out, v);
            out += '"';
          } else {
            out += v;
          }
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
        } else {
          out += std::to_string(v);
        }
      },
      f.value);
}

std::string timestamp() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

// Installs the process logger once and only adjusts its level afterwards. setup() runs again
// on every reload while workers are logging through spdlog::default_logger_raw(); replacing the
// default logger then would free it under their feet (a crash seen under load).
void install(spdlog::level::level_enum level) {
  static std::once_flag once;
  std::call_once(once, [] {
    // stderr, unbuffered lines, one mutex: containers and systemd collect stderr.
    auto logger = std::make_shared<spdlog::logger>(
        "mtlsd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_pattern("%v");
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(std::move(logger));
  });
  spdlog::default_logger_raw()->set_level(level);  // an atomic store
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
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
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unchanged
        }
    }
  }
}

std::string format_line(config::log_format format, spdlog::level::level_enum level,
                        std::string_view msg, fields f) {
  std::string out;
  out.reserve(128);
  if (format == config::log_format::json) {
    out += "\"level\":\"";
    out += level_name(level);
    out += "\",\"msg\":\"";
    append_json_escaped(out, msg);
    out += '"';
    for (const auto& x : f) {
      out += ",\"";
      append_json_escaped(out, x.key);
      out += "\":";
      append_value(out, x, true);
    }
    return out;
  }
  out += level_name(level);
  out += ' ';
  // One event, one line, and nothing a terminal would act on (CR, ESC...).
  for (char c : msg)
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  for (const auto& x : f) {
    out += ' ';
    out += x.key;
    out += '=';
    append_value(out, x, false);
  }
  return out;
}

void setup_default() {
  install(spdlog::level::info);
}

void setup(const config::log_options& options) {
  current_format = options.format;
  install(spdlog::level::from_str(options.level));
}

bool enabled(spdlog::level::level_enum level) {
  return spdlog::default_logger_raw()->should_log(level);
}

void write(spdlog::level::level_enum level, std::string_view msg, fields f) {
  auto* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  const auto format = current_format.load(std::memory_order_relaxed);
  std::string body = format_line(format, level, msg, f);
  std::string line;
  if (format == config::log_format::json)
    line = "{\"ts\":\"" + timestamp() + "\"," + body + "}";
  else
    line = timestamp() + " " + body;
  logger->log(level, "{}", line);
}

}  // namespace mtlsd::log
