#pragma once
// How a log line is made (line.cpp); log.cpp writes it out. Its fields come between
// begin_line and end_line, from append_fields or a caller's own (access_log.cpp).
#include <string>
#include <string_view>

#include "mtlsd/log/log.hpp"

namespace mtlsd::log::detail {

// A line up to its fields: timestamp, level and message. In `line`'s storage (a string its
// output wrote before, sink::push), emptied, with room for the longest line this thread made
// so far (an access line is ~600 bytes), so the appends after rarely reallocate.
std::string begin_line(std::string line, line_format format, spdlog::level::level_enum level,
                       std::string_view msg);
// Ends a line begun so.
void end_line(std::string& line, line_format format);

}  // namespace mtlsd::log::detail
