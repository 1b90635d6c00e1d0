#include "mtlsd/config/diagnostic.hpp"

#include <algorithm>

namespace mtlsd::config {

std::string source_location::str() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string diagnostic::str() const {
  std::string out = where.str();
  if (!out.empty()) out += ": ";
  if (warning) out += "warning: ";
  return out + message;
}

bool has_errors(const diagnostics& d) {
  return std::any_of(d.begin(), d.end(), [](const diagnostic& x) { return !x.warning; });
}

config_error::config_error(diagnostics problems) : problems_(std::move(problems)) {
  for (const auto& p : problems_) {
    if (!text_.empty()) text_ += "\n";
    text_ += p.str();
  }
}

}  // namespace mtlsd::config
