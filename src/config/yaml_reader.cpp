// The typed readers of yaml_reader.hpp. Every problem is collected (not just the first) so that
// `mtlsd check` can print one line per problem.
#include "yaml_reader.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <set>

#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::config {
namespace {

namespace fs = std::filesystem;

// Levenshtein distance, to suggest the key the user probably meant.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

bool control(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

bool space(unsigned char c) {
  return std::isspace(c) != 0;
}

// What makes `text` no address although parse_address might take it ("" when nothing): a
// space before the host or the port was passed by `check` and refused by `run` as "Host not
// found" (review); a `|` block scalar ends in a newline.
std::string whitespace_problem(const std::string& text) {
  if (text.empty()) return {};
  if (text.rfind("unix:", 0) != 0) {
    if (std::any_of(text.begin(), text.end(), space))
      return "whitespace is no part of HOST:PORT (a space or newline around the host or port?)";
    return {};
  }
  if ((text.size() > 5 && space(text[5])) || space(text.back()) ||
      std::any_of(text.begin(), text.end(), control))
    return "a socket path that begins or ends with whitespace, or holds a control character (a "
           "newline?), is surely a mistake";
  return {};
}

}  // namespace

reader::reader(std::string file, diagnostics& out, load_options options)
    : file_(std::move(file)),
      base_dir_(fs::path(file_).parent_path()),
      out_(out),
      options_(options) {}

source_location reader::at(const YAML::Node& n) const {
  if (!n.IsDefined() || n.Mark().is_null()) return {file_, 0, 0};
  YAML::Mark m = n.Mark();
  if (n.IsNull()) {
    const auto [first, last] = empty_by_pos_.equal_range(m.pos);
    for (auto it = first; it != last; ++it)
      if (empty_values_[it->second].first.is(n)) {
        m = empty_values_[it->second].second;
        break;
      }
  }
  return {file_, m.line + 1, m.column + 1};
}

void reader::note_empty_values(const YAML::Node& root) {
  empty_values_.clear();
  empty_by_pos_.clear();
  const auto note = [&](const YAML::Node& v, const YAML::Mark& where) {
    if (where.is_null() || v.Mark().is_null()) return;
    // An alias of an empty value (`tls: &t` ... `client_auth: *t`) keeps the first key found.
    const auto [first, last] = empty_by_pos_.equal_range(v.Mark().pos);
    for (auto it = first; it != last; ++it)
      if (empty_values_[it->second].first.is(v)) return;
    empty_by_pos_.emplace(v.Mark().pos, empty_values_.size());
    empty_values_.emplace_back(v, where);
  };
  // Each container once: an alias repeats one, and a chain of them would cost 2^depth.
  std::set<std::pair<int, int>> seen;
  // (node, the mark of the key it is the value of, or a null mark)
  std::vector<std::pair<YAML::Node, YAML::Mark>> todo{{root, YAML::Mark::null_mark()}};
  while (!todo.empty()) {
    const auto [n, key] = todo.back();
    todo.pop_back();
    if (!n.IsMap() && !n.IsSequence()) continue;
    if (!seen.emplace(n.Mark().pos, static_cast<int>(n.Type())).second) continue;
    if (n.IsMap()) {
      for (const auto& kv : n) {
        if (kv.second.IsNull())
          note(kv.second, kv.first.Mark());  // `key:` alone, or `key: ~`: at the key
        else
          todo.emplace_back(kv.second, kv.first.Mark());
      }
      continue;
    }
    // A block list's mark is its first `-`. An empty item (`-` alone) has the mark of the next
    // token, which is at or left of the `-` column (the next `-`, or the key after the list); a
    // `~` is right of it, where it is written. Flow lists have no empty items.
    const bool block = n.Style() != YAML::EmitterStyle::Flow;
    std::size_t i = 0;
    for (const auto& item : n) {
      if (!item.IsNull())
        todo.emplace_back(item, YAML::Mark::null_mark());
      else if (block && item.Mark().column <= n.Mark().column)
        note(item, i == 0 || key.is_null() ? n.Mark() : key);
      ++i;
    }
  }
}

bool reader::map(const YAML::Node& n, const std::string& path, keys known) {
  if (n.IsNull()) return true;
  if (!n.IsMap()) {
    error(n, path + ": expected a mapping of keys, got " + kind(n));
    return false;
  }
  std::set<std::string> seen;
  for (const auto& kv : n) {
    if (kv.first.IsNull() || (kv.first.IsScalar() && kv.first.Scalar().empty())) {
      error(kv.first, "an empty key in " + path + " (null, ~ and \"\" name no key)");
      continue;
    }
    if (!kv.first.IsScalar()) {
      error(kv.first, "a key that is not a string (" + kind(kv.first) + ") in " + path);
      continue;
    }
    const std::string key = kv.first.Scalar();
    if (!seen.insert(key).second) error(kv.first, "duplicate key '" + key + "' in " + path);
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string msg = "unknown key '" + key + "' in " + path;
    std::string_view best;
    std::size_t best_d = 3;  // only suggest close matches
    for (auto k : known) {
      auto d = edit_distance(key, k);
      if (d < best_d) best_d = d, best = k;
    }
    if (!best.empty()) msg += " (did you mean '" + std::string(best) + "'?)";
    error(kv.first, msg);
  }
  return true;
}

bool reader::str(const YAML::Node& n, const std::string& path, std::string& out) {
  if (n.IsNull()) {
    out.clear();
    return true;
  }
  if (!n.IsScalar()) {
    error(n, path + ": expected a string, got " + kind(n));
    return false;
  }
  out = n.Scalar();
  return true;
}

bool reader::boolean(const YAML::Node& n, const std::string& path, bool& out) {
  static const std::pair<std::string_view, bool> words[] = {
      {"true", true}, {"yes", true}, {"on", true}, {"false", false}, {"no", false}, {"off", false}};
  if (n.IsScalar()) {
    std::string v = n.Scalar();
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
    for (auto [w, b] : words)
      if (v == w) return out = b, true;
  }
  error(n, path + ": expected true or false, got " + describe(n));
  return false;
}

bool reader::integer(const YAML::Node& n, const std::string& path, long long min, long long max,
                     long long& out) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    long long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc{} && p == s.data() + s.size()) {
      if (v < min || v > max) {
        error(n, path + ": " + s + " is out of range (" + std::to_string(min) + " to " +
                     std::to_string(max) + ")");
        return false;
      }
      out = v;
      return true;
    }
  }
  error(n, path + ": expected an integer, got " + describe(n));
  return false;
}

bool reader::dur(const YAML::Node& n, const std::string& path, duration& out) {
  if (n.IsScalar()) {
    if (auto d = parse_duration(n.Scalar())) return out = *d, true;
    if (duration_too_long(n.Scalar())) {
      error(n, path + ": invalid duration " + describe(n) + ": longer than the longest allowed, " +
                   format_duration(max_duration) + " (about 68 years)");
      return false;
    }
  }
  error(n, path + ": invalid duration " + describe(n) +
               ": expected a number with a unit (ms, s, m, h), e.g. 250ms, 10s, 5m");
  return false;
}

bool reader::addr(const YAML::Node& n, const std::string& path, address& out) {
  std::string text;
  if (!str(n, path, text)) return false;
  if (const std::string why = whitespace_problem(text); !why.empty()) {
    error(n, path + ": invalid address '" + text + "': " + why);
    return false;
  }
  auto parsed = parse_address(text);
  if (auto* msg = std::get_if<std::string>(&parsed)) {
    error(n, path + ": invalid address '" + text + "': " + *msg);
    return false;
  }
  out = std::get<address>(parsed);
  // A relative socket path is relative to the configuration file's directory, as every other
  // path here (under systemd the current directory is /, so it would land there).
  if (out.is_unix() && fs::path(out.path).is_relative()) {
    out.path = resolve(out.path, n).path;
    if (out.path.size() > max_unix_path) {
      error(n, path + ": invalid address '" + text + "': the socket path " + out.path +
                   " (relative to the configuration file's directory) is longer than " +
                   std::to_string(max_unix_path) + " bytes");
      return false;
    }
  }
  return true;
}

bool reader::strings(const YAML::Node& n, const std::string& path, std::vector<std::string>& out) {
  out.clear();
  if (n.IsNull()) return true;
  if (n.IsScalar()) {  // a single string where a list is expected: accept it, it is unambiguous
    out.push_back(n.Scalar());
    return true;
  }
  if (!n.IsSequence()) {
    error(n, path + ": expected a list of strings, got " + kind(n));
    return false;
  }
  bool ok = true;
  for (std::size_t i = 0; i < n.size(); ++i) {
    std::string s;
    if (str(n[i], path + "[" + std::to_string(i) + "]", s))
      out.push_back(s);
    else
      ok = false;
  }
  return ok;
}

file_ref reader::resolve(const std::string& raw, const YAML::Node& n) const {
  if (raw.empty()) return {};
  fs::path p(raw);
  if (p.is_relative()) p = base_dir_ / p;
  return {p.lexically_normal().string(), at(n)};
}

bool reader::file(const YAML::Node& n, const std::string& path, file_ref& out) {
  std::string raw;
  if (!str(n, path, raw)) return false;
  out = resolve(raw, n);
  return true;
}

bool reader::key_file(const YAML::Node& n, const std::string& path, file_ref& out) {
  std::string raw;
  if (!str(n, path, raw)) return false;
  if (!is_pkcs11_uri(raw)) {
    out = resolve(raw, n);
    return true;
  }
  // Kept even when malformed, so that the entry does not also read as missing its key.
  out = {raw, at(n)};
  pkcs11_uri uri;
  if (auto why = parse_pkcs11_uri(raw, uri); !why.empty()) {
    error(n, path + ": not a usable PKCS#11 URI: " + why);
    return false;
  }
  return true;
}

bool reader::files(const YAML::Node& n, const std::string& path, std::vector<file_ref>& out) {
  out.clear();
  if (n.IsScalar()) {
    // `ca: ""` as `ca: [""]`: taken as no file, it trusted the system store in client mode and
    // `crl_files: ""` turned CRL checks off (review).
    if (n.Scalar().empty()) {
      error(n, path + ": an empty file path (to name no file, write [] or leave the key out)");
      return false;
    }
    file_ref f;
    if (!file(n, path, f)) return false;
    out.push_back(f);
    return true;
  }
  if (n.IsNull()) return true;
  if (!n.IsSequence()) {
    error(n, path + ": expected a list of file paths, got " + kind(n));
    return false;
  }
  for (std::size_t i = 0; i < n.size(); ++i) {
    file_ref f;
    const std::string at = path + "[" + std::to_string(i) + "]";
    if (!file(n[i], at, f)) continue;
    // An entry that names nothing is a mistake, most often a templated value that rendered
    // empty (["${CRL}"]): dropped silently, it turned a listener's CRL checks off (review).
    if (f.empty())
      error(n[i], at + ": an empty file path");
    else
      out.push_back(f);
  }
  return true;
}

bool reader::cidrs(const YAML::Node& n, const std::string& path, std::vector<cidr>& out) {
  out.clear();
  if (n.IsNull()) return true;
  if (!n.IsSequence()) {
    error(n, path + ": expected a list of CIDR ranges (e.g. [10.0.0.0/8]), got " + kind(n));
    return false;
  }
  bool ok = true;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const std::string p = path + "[" + std::to_string(i) + "]";
    std::string text;
    if (!str(n[i], p, text)) {
      ok = false;
      continue;
    }
    auto parsed = parse_cidr(text);
    if (auto* msg = std::get_if<std::string>(&parsed)) {
      error(n[i], p + ": invalid CIDR '" + text + "': " + *msg);
      ok = false;
    } else {
      out.push_back(std::get<cidr>(parsed));
    }
  }
  return ok;
}

std::string reader::one_line(std::string msg) {
  if (std::none_of(msg.begin(), msg.end(), [](unsigned char c) { return control(c); })) return msg;
  std::string out;
  for (const unsigned char c : msg) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (control(c)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string reader::kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    case YAML::NodeType::Null:
      return "nothing";
    default:
      return "an undefined value";
  }
}

}  // namespace mtlsd::config
