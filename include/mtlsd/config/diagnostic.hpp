#pragma once
// A problem found while loading or checking configuration, with the place it comes from.
#include <string>
#include <vector>

namespace mtlsd::config {

// Where a value came from. line/column are 1-based; 0 means "unknown" (e.g. a default value).
struct source_location {
  std::string file;
  int line = 0;
  int column = 0;

  // "file:line:col" (or just "file" when the position is unknown).
  std::string str() const;
};

struct diagnostic {
  source_location where;
  std::string message;
  bool warning = false;

  // "file:line:col: message" or "file:line:col: warning: message" — the format `mtlsd check`
  // prints, one per line, like a compiler.
  std::string str() const;
};

using diagnostics = std::vector<diagnostic>;

bool has_errors(const diagnostics& d);

// Thrown by control-plane code (config load, runtime build) when a value is unusable.
class config_error : public std::exception {
 public:
  explicit config_error(diagnostics problems);
  const diagnostics& problems() const noexcept { return problems_; }
  const char* what() const noexcept override { return text_.c_str(); }

 private:
  diagnostics problems_;
  std::string text_;
};

}  // namespace mtlsd::config
