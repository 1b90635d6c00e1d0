// How a log line is made (line.hpp): `ts level msg k=v...` in text, one JSON object in json.
#include "line.hpp"

#include <algorithm>
#include <chrono>

namespace mtlsd::log {
namespace {

std::string_view level_name(spdlog::level::level_enum l) {
  static constexpr std::string_view names[] = {"trace", "debug", "info",
                                               "warn",  "error", "critical"};
  const auto i = static_cast<std::size_t>(l);  // spdlog's order, then off
  return i < std::size(names) ? names[i] : "off";
}

// The line's body (format_line) up to its fields; `out` already holds what goes before.
void append_head(std::string& out, line_format format, spdlog::level::level_enum level,
                 std::string_view msg) {
  if (format == line_format::json) {
    out += "\"level\":\"";
    out += level_name(level);
    out += "\",\"msg\":\"";
    append_json_escaped(out, msg);
    out += '"';
    return;
  }
  out += level_name(level);
  out += ' ';
  // One event, one line, and nothing a terminal would act on (CR, ESC...).
  for (char c : msg)
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
}

// The head this thread made last, for the next line with the same: a thread's lines mostly
// come in runs of one kind (HTTP mode's "request" lines), whose head then costs a comparison
// and a copy (~100 instructions less per line in text, ~200 in JSON, of ~2,500).
struct made_head {
  line_format format = line_format::text;
  spdlog::level::level_enum level = spdlog::level::off;
  std::string msg;
  std::string text;  // append_head's
};
thread_local made_head last_head;

thread_local std::size_t longest_line = 256;

}  // namespace

namespace detail {

std::string begin_line(std::string line, line_format format, spdlog::level::level_enum level,
                       std::string_view msg) {
  made_head& head = last_head;
  if (head.level != level || head.format != format || head.msg != msg) {
    head.text.clear();
    append_head(head.text, format, level, msg);
    head.msg = msg;
    head.level = level;
    head.format = format;
  }
  char ts[32];
  line.clear();
  line.reserve(longest_line);
  if (format == line_format::json) line += "{\"ts\":\"";
  line += format_rfc3339(ts, std::chrono::system_clock::now(), true);
  line += format == line_format::json ? "\"," : " ";
  line += head.text;
  return line;
}

void end_line(std::string& line, line_format format) {
  line += format == line_format::json ? "}\n" : "\n";
  longest_line = std::clamp(line.size(), longest_line, std::size_t{4096});
}

}  // namespace detail

std::string format_line(line_format format, spdlog::level::level_enum level, std::string_view msg,
                        fields f) {
  std::string out;
  out.reserve(128);
  append_head(out, format, level, msg);
  append_fields(out, format, f);
  return out;
}

}  // namespace mtlsd::log
