#pragma once
// How a log line is written (log.format). Its own header so the configuration can name it
// without the log depending on the configuration: log stays a leaf.

namespace mtlsd::log {

enum class line_format { text, json };

}  // namespace mtlsd::log
