// mtlsd_loadgen's output: one line per run, JSON (default) or key=value text.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

namespace loadgen {

class line_writer {
 public:
  explicit line_writer(bool json) : json_(json) {}
  line_writer& str(const char* k, const std::string& v) {
    sep();
    if (json_) {
      out_ << '"' << k << "\":\"";
      for (const char c : v) {
        if (c == '"' || c == '\\')
          out_ << '\\' << c;
        else if (static_cast<unsigned char>(c) < 0x20)
          out_ << ' ';
        else
          out_ << c;
      }
      out_ << '"';
    } else {
      out_ << k << '=' << v;
    }
    return *this;
  }
  line_writer& num(const char* k, double v, int decimals = 3) {
    sep();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, std::isfinite(v) ? v : 0.0);
    out_ << (json_ ? "\"" : "") << k << (json_ ? "\":" : "=") << buf;
    return *this;
  }
  line_writer& integer(const char* k, std::uint64_t v) {
    sep();
    out_ << (json_ ? "\"" : "") << k << (json_ ? "\":" : "=") << v;
    return *this;
  }
  std::string finish() { return (json_ ? "{" : "") + out_.str() + (json_ ? "}" : ""); }

 private:
  void sep() {
    if (!first_) out_ << (json_ ? "," : " ");
    first_ = false;
  }
  bool json_;
  bool first_ = true;
  std::ostringstream out_;
};

}  // namespace loadgen
