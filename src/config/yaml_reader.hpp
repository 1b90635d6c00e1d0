#pragma once
// Reading typed values out of yaml-cpp nodes, with every problem collected as a diagnostic at the
// node's FILE:LINE:COL (yaml-cpp's marks are 0-based, ours 1-based). Internal to src/config: the
// section parsers (parse_*.cpp) and the rules (validate.cpp) are the only users of yaml-cpp.
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mtlsd/config/config.hpp"

namespace mtlsd::config {

using keys = std::initializer_list<std::string_view>;

class reader {
 public:
  reader(std::string file, diagnostics& out);

  source_location at(const YAML::Node& n) const;
  void error(const source_location& where, std::string msg) {
    out_.push_back({where, std::move(msg), false});
  }
  void error(const YAML::Node& n, std::string msg) { error(at(n), std::move(msg)); }
  // Loads anyway; `check` prints it as "FILE:LINE:COL: warning: ...", `run` logs it.
  void warning(const YAML::Node& n, std::string msg) {
    out_.push_back({at(n), std::move(msg), true});
  }

  // `n` must be a mapping whose keys are all in `known`. A null node (e.g. `tls:` with nothing
  // after it) counts as an empty mapping.
  bool map(const YAML::Node& n, const std::string& path, keys known);

  bool str(const YAML::Node& n, const std::string& path, std::string& out);
  bool boolean(const YAML::Node& n, const std::string& path, bool& out);
  bool integer(const YAML::Node& n, const std::string& path, long long min, long long max,
               long long& out);
  template <class Int>
  void integer_into(const YAML::Node& n, const std::string& path, long long min, long long max,
                    Int& out) {
    long long v = 0;
    if (integer(n, path, min, max, v)) out = static_cast<Int>(v);
  }
  bool dur(const YAML::Node& n, const std::string& path, duration& out);
  bool addr(const YAML::Node& n, const std::string& path, address& out);
  bool strings(const YAML::Node& n, const std::string& path, std::vector<std::string>& out);

  // A path as written, made absolute against the configuration file's directory.
  file_ref resolve(const std::string& raw, const YAML::Node& n) const;
  bool file(const YAML::Node& n, const std::string& path, file_ref& out);
  // A private key: a file, or a pkcs11: URI (kept verbatim, checked for syntax here so that a
  // typo is reported at its line; the token itself is opened when credentials are loaded).
  bool key_file(const YAML::Node& n, const std::string& path, file_ref& out);
  bool files(const YAML::Node& n, const std::string& path, std::vector<file_ref>& out);
  // A list of CIDR ranges (or single addresses).
  bool cidrs(const YAML::Node& n, const std::string& path, std::vector<cidr>& out);

  template <class E>
  bool choice(const YAML::Node& n, const std::string& path,
              std::initializer_list<std::pair<std::string_view, E>> options, E& out) {
    if (n.IsScalar()) {
      for (auto& [name, value] : options)
        if (n.Scalar() == name) return out = value, true;
    }
    std::string list;
    for (auto& [name, value] : options)
      list += (list.empty() ? "" : " | ") + std::string(name);
    error(n, path + ": invalid value " + describe(n) + ": expected " + list);
    return false;
  }

  static std::string kind(const YAML::Node& n);
  static std::string describe(const YAML::Node& n) { return kind(n); }

 private:
  std::string file_;
  std::filesystem::path base_dir_;
  diagnostics& out_;
};

// While alive, errors about an empty value of `key` in mapping `m` point at the key: yaml-cpp
// gives an empty value (`upstream:`) the position of the NEXT token, on the following line.
class empty_value_scope {
 public:
  empty_value_scope(const YAML::Node& m, const char* key);
  ~empty_value_scope();
  empty_value_scope(const empty_value_scope&) = delete;
  empty_value_scope& operator=(const empty_value_scope&) = delete;

 private:
  YAML::Mark mark_ = YAML::Mark::null_mark();
  const YAML::Mark* saved_;
};

// Calls f(value) when `key` is present in mapping `m`. Reads through a const node so that
// operator[] never inserts keys (a yaml-cpp pitfall).
template <class F>
void with(const YAML::Node& m, const char* key, F&& f) {
  if (!m.IsMap()) return;
  const YAML::Node v = m[key];
  if (!v.IsDefined()) return;
  empty_value_scope scope(m, key);
  f(v);
}

}  // namespace mtlsd::config
