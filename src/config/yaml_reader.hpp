#pragma once
// Reading typed values out of yaml-cpp nodes, with every problem collected as a diagnostic at the
// node's FILE:LINE:COL (yaml-cpp's marks are 0-based, ours 1-based). Internal to src/config: the
// section parsers (parse_*.cpp) and the rules (validate.cpp) are the only users of yaml-cpp.
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"

namespace mtlsd::config {

using keys = std::initializer_list<std::string_view>;

class reader {
 public:
  reader(std::string file, diagnostics& out, load_options options = {});

  // What the load is for (load_options): a reload reads the same, a few checks say less.
  const load_options& options() const { return options_; }

  // Where `n` is written. yaml-cpp gives an empty value (`upstream:`, a `-` with nothing after
  // it) the position of the NEXT token, often lines further on: such a value is placed at its
  // key, an empty list item at its `-` when that is known (the first item of a block list), else
  // at the list's key (the message names the index). Needs note_empty_values(root) first.
  source_location at(const YAML::Node& n) const;
  // Records where each empty value of the document `root` is written, for at().
  void note_empty_values(const YAML::Node& root);

  // A message with a control character in it (a `|` block scalar's newline) is escaped, so that
  // each problem stays one line.
  void error(const source_location& where, std::string msg) {
    out_.push_back({where, one_line(std::move(msg)), false});
  }
  void error(const YAML::Node& n, std::string msg) { error(at(n), std::move(msg)); }
  // Loads anyway; `check` prints it as "FILE:LINE:COL: warning: ...", `run` logs it.
  void warning(const YAML::Node& n, std::string msg) {
    out_.push_back({at(n), one_line(std::move(msg)), true});
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
  // A file path; `""` (what `check --print` writes for an unset one) or null names none.
  bool file(const YAML::Node& n, const std::string& path, file_ref& out);
  // A private key: a file, or a pkcs11: URI (kept verbatim, checked for syntax here so that a
  // typo is reported at its line; the token itself is opened when credentials are loaded).
  bool key_file(const YAML::Node& n, const std::string& path, file_ref& out);
  // One path or a list of them. `""`, alone or as an entry, is refused: most often a templated
  // value that rendered empty, taken as "none" it trusted the system store or dropped CRL
  // checks. A null value (`ca:`, `ca: ~`) is the key left out, `[]` no file.
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
  // `msg` with control characters escaped (\n, \r, \t, \xNN).
  static std::string one_line(std::string msg);

 private:
  std::string file_;
  std::filesystem::path base_dir_;
  diagnostics& out_;
  load_options options_;
  // note_empty_values: each empty value with where it is written, found by the position yaml-cpp
  // gave it (Mark::pos) and then by identity.
  std::vector<std::pair<YAML::Node, YAML::Mark>> empty_values_;
  std::unordered_multimap<int, std::size_t> empty_by_pos_;
};

// Calls f(value) when `key` is present in mapping `m`. Reads through a const node so that
// operator[] never inserts keys (a yaml-cpp pitfall).
template <class F>
void with(const YAML::Node& m, const char* key, F&& f) {
  if (!m.IsMap()) return;
  const YAML::Node v = m[key];
  if (!v.IsDefined()) return;
  f(v);
}

}  // namespace mtlsd::config
