#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace mtlsd::config {

using duration = std::chrono::milliseconds;

// Parses "250ms", "10s", "5m", "1h", compounds such as "1m30s", and "0". Returns nullopt on
// anything else (negative values, missing units, overflow).
std::optional<duration> parse_duration(std::string_view text);

// The inverse, for logs and docs: 1500ms -> "1.5s", 300000ms -> "5m".
std::string format_duration(duration d);

}  // namespace mtlsd::config
