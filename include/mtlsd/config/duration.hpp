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

// The longest duration accepted, summed over a compound's parts: 2^31 - 1 seconds (~68 years;
// "596523h"). Past it a deadline computed as now + duration in nanoseconds would wrap.
inline constexpr duration max_duration = std::chrono::seconds(2'147'483'647);

// Whether parse_duration refused `text` only for being longer than max_duration: well formed
// otherwise. The configuration's error then says so instead of "expected a number with a unit".
bool duration_too_long(std::string_view text);

// The inverse, for logs and docs: 1500ms -> "1.5s", 300000ms -> "5m".
std::string format_duration(duration d);

}  // namespace mtlsd::config
