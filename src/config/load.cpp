// YAML -> configuration structs. The only file that includes yaml-cpp.
//
// Every problem is collected (not just the first) so that `mtlsd check` can print one line per
// problem, each as FILE:LINE:COL from yaml-cpp's marks (0-based there, 1-based here).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <unistd.h>

#include "mtlsd/config/config.hpp"
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

using keys = std::initializer_list<std::string_view>;

// Why mtlsd could not append to (or create) the file `path`, or nothing. Checked at load so
// that `mtlsd check` and a reload refuse a path the daemon could not open.
std::optional<std::string> unwritable_log_file(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (fs::exists(st)) {
    if (fs::is_directory(st)) return "it is a directory";
    if (::access(path.c_str(), W_OK) != 0) return std::string(std::strerror(errno));
    return std::nullopt;
  }
  const fs::path dir = fs::path(path).parent_path();
  const auto dst = fs::status(dir, ec);
  if (!fs::exists(dst)) return "the directory " + dir.string() + " does not exist";
  if (!fs::is_directory(dst)) return dir.string() + " is not a directory";
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return "the directory " + dir.string() + " is not writable (" + std::strerror(errno) + ")";
  return std::nullopt;
}

// While with() runs the handler of a key whose value is empty, that key's position.
thread_local const YAML::Mark* empty_value_key = nullptr;

class reader {
 public:
  reader(std::string file, diagnostics& out)
      : file_(std::move(file)), base_dir_(fs::path(file_).parent_path()), out_(out) {}

  source_location at(const YAML::Node& n) const {
    // yaml-cpp gives an empty value (`upstream:`) the position of the NEXT token, which is on
    // the following line: point at the key instead (remembered by with()).
    if (n.IsNull() && empty_value_key && !empty_value_key->is_null())
      return {file_, empty_value_key->line + 1, empty_value_key->column + 1};
    if (!n.IsDefined() || n.Mark().is_null()) return {file_, 0, 0};
    return {file_, n.Mark().line + 1, n.Mark().column + 1};
  }
  void error(const source_location& where, std::string msg) {
    out_.push_back({where, std::move(msg), false});
  }
  void error(const YAML::Node& n, std::string msg) { error(at(n), std::move(msg)); }

  // `n` must be a mapping whose keys are all in `known`. A null node (e.g. `tls:` with nothing
  // after it) counts as an empty mapping.
  bool map(const YAML::Node& n, const std::string& path, keys known) {
    if (n.IsNull()) return true;
    if (!n.IsMap()) {
      error(n, path + ": expected a mapping of keys, got " + kind(n));
      return false;
    }
    std::set<std::string> seen;
    for (const auto& kv : n) {
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

  bool str(const YAML::Node& n, const std::string& path, std::string& out) {
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

  bool boolean(const YAML::Node& n, const std::string& path, bool& out) {
    static const std::pair<std::string_view, bool> words[] = {{"true", true}, {"yes", true},
                                                              {"on", true},   {"false", false},
                                                              {"no", false},  {"off", false}};
    if (n.IsScalar()) {
      std::string v = n.Scalar();
      std::transform(v.begin(), v.end(), v.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      for (auto [w, b] : words)
        if (v == w) return out = b, true;
    }
    error(n, path + ": expected true or false, got " + describe(n));
    return false;
  }

  bool integer(const YAML::Node& n, const std::string& path, long long min, long long max,
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

  template <class Int>
  void integer_into(const YAML::Node& n, const std::string& path, long long min, long long max,
                    Int& out) {
    long long v = 0;
    if (integer(n, path, min, max, v)) out = static_cast<Int>(v);
  }

  bool dur(const YAML::Node& n, const std::string& path, duration& out) {
    if (n.IsScalar()) {
      if (auto d = parse_duration(n.Scalar())) return out = *d, true;
    }
    error(n, path + ": invalid duration " + describe(n) +
                 ": expected a number with a unit (ms, s, m, h), e.g. 250ms, 10s, 5m");
    return false;
  }

  bool addr(const YAML::Node& n, const std::string& path, address& out) {
    std::string text;
    if (!str(n, path, text)) return false;
    auto parsed = parse_address(text);
    if (auto* msg = std::get_if<std::string>(&parsed)) {
      error(n, path + ": invalid address '" + text + "': " + *msg);
      return false;
    }
    out = std::get<address>(parsed);
    return true;
  }

  bool strings(const YAML::Node& n, const std::string& path, std::vector<std::string>& out) {
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

  file_ref resolve(const std::string& raw, const YAML::Node& n) const {
    if (raw.empty()) return {};
    fs::path p(raw);
    if (p.is_relative()) p = base_dir_ / p;
    return {p.lexically_normal().string(), at(n)};
  }

  bool file(const YAML::Node& n, const std::string& path, file_ref& out) {
    std::string raw;
    if (!str(n, path, raw)) return false;
    out = resolve(raw, n);
    return true;
  }

  // A private key: a file, or a pkcs11: URI (kept verbatim, checked for syntax here so that a
  // typo is reported at its line; the token itself is opened when credentials are loaded).
  bool key_file(const YAML::Node& n, const std::string& path, file_ref& out) {
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

  bool files(const YAML::Node& n, const std::string& path, std::vector<file_ref>& out) {
    out.clear();
    if (n.IsScalar()) {
      file_ref f;
      if (!file(n, path, f)) return false;
      if (!f.empty()) out.push_back(f);
      return true;
    }
    if (n.IsNull()) return true;
    if (!n.IsSequence()) {
      error(n, path + ": expected a list of file paths, got " + kind(n));
      return false;
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
      file_ref f;
      if (file(n[i], path + "[" + std::to_string(i) + "]", f) && !f.empty()) out.push_back(f);
    }
    return true;
  }

  // A list of CIDR ranges (or single addresses).
  bool cidrs(const YAML::Node& n, const std::string& path, std::vector<cidr>& out) {
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

  static std::string kind(const YAML::Node& n) {
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
  static std::string describe(const YAML::Node& n) { return kind(n); }

 private:
  std::string file_;
  fs::path base_dir_;
  diagnostics& out_;
};

// Calls f(value) when `key` is present in mapping `m`. Reads through a const node so that
// operator[] never inserts keys (a yaml-cpp pitfall).
// While alive, errors about an empty value of `key` in mapping `m` point at the key.
class empty_value_scope {
 public:
  empty_value_scope(const YAML::Node& m, const char* key) : saved_(empty_value_key) {
    const YAML::Node v = m.IsMap() ? m[key] : YAML::Node();
    if (!v.IsDefined() || !v.IsNull()) return;
    for (const auto& kv : m)
      if (kv.first.Scalar() == key) mark_ = kv.first.Mark();
    empty_value_key = &mark_;
  }
  ~empty_value_scope() { empty_value_key = saved_; }
  empty_value_scope(const empty_value_scope&) = delete;
  empty_value_scope& operator=(const empty_value_scope&) = delete;

 private:
  YAML::Mark mark_ = YAML::Mark::null_mark();
  const YAML::Mark* saved_;
};

template <class F>
void with(const YAML::Node& m, const char* key, F&& f) {
  if (!m.IsMap()) return;
  const YAML::Node v = m[key];
  if (!v.IsDefined()) return;
  empty_value_scope scope(m, key);
  f(v);
}

// The identity matchers of `allow` and of its rules (the caller checks the keys).
void parse_identity(reader& r, const YAML::Node& n, const std::string& path, identity_matchers& a) {
  with(n, "spiffe_ids", [&](auto v) {
    if (!r.strings(v, path + ".spiffe_ids", a.spiffe_ids)) return;
    for (std::size_t i = 0; i < a.spiffe_ids.size(); ++i) {
      const auto& id = a.spiffe_ids[i];
      if (id.rfind("spiffe://", 0) != 0)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".spiffe_ids: '" + id + "' is not a SPIFFE ID (must start with spiffe://)");
      auto star = id.find('*');
      if (star != std::string::npos &&
          (star != id.size() - 1 || id.size() < 2 || id[star - 1] != '/'))
        r.error(v.IsSequence() ? v[i] : v,
                path + ".spiffe_ids: '" + id + "': '*' is only allowed as a trailing '/*'");
    }
  });
  with(n, "uri_sans", [&](auto v) { r.strings(v, path + ".uri_sans", a.uri_sans); });
  with(n, "dns_sans", [&](auto v) {
    if (!r.strings(v, path + ".dns_sans", a.dns_sans)) return;
    for (std::size_t i = 0; i < a.dns_sans.size(); ++i) {
      const auto& d = a.dns_sans[i];
      if (d.find('*') != std::string::npos &&
          (d.rfind("*.", 0) != 0 || d.find('*', 1) != std::string::npos))
        r.error(v.IsSequence() ? v[i] : v,
                path + ".dns_sans: '" + d + "': wildcards are only allowed as a leading '*.'");
    }
  });
  with(n, "email_sans", [&](auto v) {
    if (!r.strings(v, path + ".email_sans", a.email_sans)) return;
    for (std::size_t i = 0; i < a.email_sans.size(); ++i) {
      const auto& e = a.email_sans[i];
      const auto at = e.find('@');
      if (at == std::string::npos || at == 0 || at + 1 == e.size() ||
          e.find('@', at + 1) != std::string::npos)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".email_sans: '" + e + "' is not an e-mail address (local@domain)");
    }
  });
  with(n, "common_names", [&](auto v) { r.strings(v, path + ".common_names", a.common_names); });
  with(n, "organizational_units",
       [&](auto v) { r.strings(v, path + ".organizational_units", a.organizational_units); });
  with(n, "sha256_fingerprints", [&](auto v) {
    if (!r.strings(v, path + ".sha256_fingerprints", a.sha256_fingerprints)) return;
    for (std::size_t i = 0; i < a.sha256_fingerprints.size(); ++i) {
      std::string hex;
      for (char c : a.sha256_fingerprints[i])
        if (c != ':') hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".sha256_fingerprints: '" + a.sha256_fingerprints[i] +
                    "' is not a SHA-256 fingerprint (64 hex digits, colons optional)");
      a.sha256_fingerprints[i] = hex;
    }
  });
}

// Lower-cases `sni` entries and checks each is a DNS name or "*.suffix".
void parse_sni(reader& r, const YAML::Node& v, const std::string& path,
               std::vector<std::string>& out) {
  if (!r.strings(v, path, out)) return;
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto& name = out[i];
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const std::string_view rest =
        name.rfind("*.", 0) == 0 ? std::string_view(name).substr(2) : std::string_view(name);
    if (rest.empty() || rest.find('*') != std::string_view::npos || rest.front() == '.' ||
        rest.back() == '.' || rest.find_first_of(" /:") != std::string_view::npos)
      r.error(v.IsSequence() ? v[i] : v,
              path + ": '" + name + "' is not a server name: expected a DNS name or '*.suffix'");
  }
}

void parse_cidrs(reader& r, const YAML::Node& v, const std::string& path, std::vector<cidr>& out) {
  std::vector<std::string> texts;
  if (!r.strings(v, path, texts)) return;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto parsed = parse_cidr(texts[i]);
    if (auto* msg = std::get_if<std::string>(&parsed))
      r.error(v.IsSequence() ? v[i] : v,
              path + "[" + std::to_string(i) + "]: invalid CIDR '" + texts[i] + "': " + *msg);
    else
      out.push_back(std::move(std::get<cidr>(parsed)));
  }
}

enum class rule_side { client_auth, server_auth };

// One rule, or its `not:` (nested = true: no further `not:`).
void parse_rule_matchers(reader& r, const YAML::Node& n, const std::string& path, rule_matchers& m,
                         rule_side side, bool nested, allow_rule* rule) {
  if (!n.IsMap()) {
    if (n.IsNull())
      r.error(n, path + ": an empty " + (nested ? "'not'" : "rule") +
                     " (give at least one matcher: " +
                     "spiffe_ids, uri_sans, dns_sans, common_names, organizational_units, "
                     "sha256_fingerprints, email_sans, " +
                     (side == rule_side::client_auth ? "source_cidrs, " : "") + "sni" +
                     (nested ? "" : ", not") + ")");
    else
      r.map(n, path, {});
    return;
  }
  if (nested)
    r.map(n, path,
          {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
           "sha256_fingerprints", "email_sans", "source_cidrs", "sni"});
  else
    r.map(n, path,
          {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
           "sha256_fingerprints", "email_sans", "source_cidrs", "sni", "not"});
  parse_identity(r, n, path, m);
  with(n, "source_cidrs", [&](auto v) {
    if (side == rule_side::server_auth) {
      r.error(v, path +
                     ".source_cidrs: not available in server_auth (the remote is the address "
                     "mtlsd connects to; use sni, or the identity matchers)");
      return;
    }
    parse_cidrs(r, v, path + ".source_cidrs", m.source_cidrs);
  });
  with(n, "sni", [&](auto v) { parse_sni(r, v, path + ".sni", m.sni); });
  // A matcher with no entries could never match: almost certainly a mistake.
  for (const auto& kv : n) {
    const std::string key = kv.first.Scalar();
    if (key == "not") continue;
    const YAML::Node& v = kv.second;
    if (v.IsNull() || (v.IsSequence() && v.size() == 0))
      r.error(kv.first, path + "." + key + ": an empty list never matches; remove the matcher");
  }
  if (rule) {
    with(n, "not", [&](auto v) {
      parse_rule_matchers(r, v, path + ".not", rule->exclude, side, true, nullptr);
    });
  }
  if (n.size() == 0)
    r.error(n, path + ": an empty " + std::string(nested ? "'not'" : "rule") +
                   " (give at least one matcher)");
}

void parse_allow(reader& r, const YAML::Node& n, const std::string& path, allow_list& a,
                 rule_side side) {
  r.map(n, path,
        {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
         "sha256_fingerprints", "email_sans", "rules"});
  parse_identity(r, n, path, a);
  with(n, "rules", [&](auto v) {
    if (v.IsNull()) return;
    if (!v.IsSequence()) {
      r.error(v, path + ".rules: expected a list of rules, got " + reader::kind(v));
      return;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      allow_rule rule;
      rule.where = r.at(v[i]);
      const std::string p = path + ".rules[" + std::to_string(i) + "]";
      parse_rule_matchers(r, v[i], p, rule.match, side, false, &rule);
      a.rules.push_back(std::move(rule));
    }
  });
}

// A key's secret comes from the file that matches its kind: key_password_file decrypts a key
// file, key_pin_file (or the URI's pin-source/pin-value) logs in to a PKCS#11 token.
void check_key_secrets(reader& r, const YAML::Node& n, const std::string& path, const file_ref& key,
                       const file_ref& password, const file_ref& pin) {
  const bool uri = is_pkcs11_uri(key.path);
  if (uri && !password.empty())
    r.error(n["key_password_file"],
            path + ".key_password_file: the key is a pkcs11: URI; its PIN goes in key_pin_file");
  if (!uri && !pin.empty())
    r.error(n["key_pin_file"], path +
                                   ".key_pin_file applies to a pkcs11: key only (a key file takes "
                                   "key_password_file)");
  pkcs11_uri parsed;
  if (uri && !pin.empty() && parse_pkcs11_uri(key.path, parsed).empty() &&
      (!parsed.pin_source.empty() || !parsed.pin_value.empty()))
    r.error(n["key_pin_file"],
            path +
                ".key_pin_file: the key's URI already gives the PIN (pin-source or "
                "pin-value); give it once");
}

// tls.certificates: each entry is cert + key or pkcs12, plus the names it serves.
void parse_certificate_entry(reader& r, const YAML::Node& n, const std::string& path,
                             certificate_entry& e) {
  e.where = r.at(n);
  if (!r.map(n, path,
             {"cert", "key", "key_password_file", "key_pin_file", "pkcs12", "pkcs12_password_file",
              "server_names"}))
    return;
  with(n, "cert", [&](auto v) { r.file(v, path + ".cert", e.cert); });
  with(n, "key", [&](auto v) { r.key_file(v, path + ".key", e.key); });
  with(n, "key_password_file",
       [&](auto v) { r.file(v, path + ".key_password_file", e.key_password_file); });
  with(n, "key_pin_file", [&](auto v) { r.file(v, path + ".key_pin_file", e.key_pin_file); });
  check_key_secrets(r, n, path, e.key, e.key_password_file, e.key_pin_file);
  with(n, "pkcs12", [&](auto v) { r.file(v, path + ".pkcs12", e.pkcs12); });
  with(n, "pkcs12_password_file",
       [&](auto v) { r.file(v, path + ".pkcs12_password_file", e.pkcs12_password_file); });
  with(n, "server_names", [&](auto v) {
    if (!r.strings(v, path + ".server_names", e.server_names)) return;
    for (std::size_t i = 0; i < e.server_names.size(); ++i) {
      auto& name = e.server_names[i];
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const std::string_view rest =
          name.rfind("*.", 0) == 0 ? std::string_view(name).substr(2) : std::string_view(name);
      const bool bad = rest.empty() || rest.find('*') != std::string_view::npos ||
                       rest.front() == '.' || rest.back() == '.' ||
                       rest.find_first_of(" /:") != std::string_view::npos;
      if (bad)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".server_names: '" + name +
                    "' is not a server name: expected a DNS name or '*.suffix'");
    }
  });
  const bool has_pem = !e.cert.empty() || !e.key.empty();
  if (has_pem && !e.pkcs12.empty())
    r.error(n, path + ": give either cert + key or pkcs12, not both");
  else if (!e.cert.empty() && e.key.empty())
    r.error(n, path + ": 'cert' is set but 'key' is missing");
  else if (e.cert.empty() && !e.key.empty())
    r.error(n, path + ": 'key' is set but 'cert' is missing");
  else if (!has_pem && e.pkcs12.empty())
    r.error(n, path + ": each entry needs cert + key or pkcs12");
}

void parse_certificates(reader& r, const YAML::Node& n, const std::string& path, tls_options& t) {
  t.certificates_where = r.at(n);
  if (!n.IsSequence()) {
    r.error(
        n, path + ": expected a list of {cert, key, server_names} entries, got " + reader::kind(n));
    return;
  }
  if (n.size() == 0) r.error(n, path + ": the list is empty: give at least one certificate");
  for (std::size_t i = 0; i < n.size(); ++i) {
    certificate_entry e;
    parse_certificate_entry(r, n[i], path + "[" + std::to_string(i) + "]", e);
    t.certificates.push_back(std::move(e));
  }
}

// "unix:/path" or "unix:///path" (the URL form SPIFFE_ENDPOINT_SOCKET usually holds) -> "/path";
// nullopt with `why` set otherwise. Only unix sockets: the Workload API over TCP would need its
// own authentication of the agent, which the spec leaves to the deployment.
std::optional<std::string> workload_api_socket(const std::string& value, std::string& why) {
  constexpr std::string_view scheme = "unix:";
  if (value.rfind(scheme, 0) != 0) {
    why = "expected unix:/path/to/agent.sock (only unix sockets are supported)";
    return std::nullopt;
  }
  std::string path = value.substr(scheme.size());
  if (path.rfind("//", 0) == 0) {
    // unix://HOST/path: only an empty host (unix:///path) names a local file.
    if (path.rfind("///", 0) != 0) {
      why = "a unix: URL names no host: write unix:///path or unix:/path";
      return std::nullopt;
    }
    path = path.substr(2);
  }
  if (path.empty() || path.front() != '/') {
    why = "the socket path must be absolute";
    return std::nullopt;
  }
  if (path.size() >= 108) {  // sizeof(sockaddr_un::sun_path)
    why = "the socket path is longer than a unix socket address can hold (107 bytes)";
    return std::nullopt;
  }
  return fs::path(path).lexically_normal().string();
}

// A trust domain name, as in spiffe://NAME/...: lower-case letters, digits, '.', '-', '_'.
// "spiffe://example.org" is accepted too and stored bare.
bool trust_domain_name(std::string& td) {
  if (td.rfind("spiffe://", 0) == 0) td = td.substr(9);
  if (!td.empty() && td.back() == '/') td.pop_back();
  return !td.empty() &&
         td.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-_") == std::string::npos;
}

void parse_spiffe(reader& r, const YAML::Node& n, const std::string& path, spiffe_options& s) {
  s.enabled = true;
  s.where = r.at(n);
  if (!r.map(n, path, {"workload_api", "trust_domains"})) return;
  if (!n.IsMap() || !n["workload_api"].IsDefined())
    r.error(n, path +
                   ".workload_api is required: unix:/path/to/agent.sock, or env for "
                   "$SPIFFE_ENDPOINT_SOCKET");
  with(n, "workload_api", [&](auto v) {
    if (!r.str(v, path + ".workload_api", s.workload_api)) return;
    std::string value = s.workload_api, source = "";
    if (value == "env") {
      const char* env = std::getenv("SPIFFE_ENDPOINT_SOCKET");
      if (!env || !*env) {
        r.error(v, path + ".workload_api: env, but SPIFFE_ENDPOINT_SOCKET is not set");
        return;
      }
      value = env;
      source = " (from SPIFFE_ENDPOINT_SOCKET)";
    }
    std::string why;
    if (auto socket = workload_api_socket(value, why))
      s.socket_path = *socket;
    else
      r.error(v, path + ".workload_api: '" + value + "'" + source + ": " + why);
  });
  with(n, "trust_domains", [&](auto v) {
    if (!r.strings(v, path + ".trust_domains", s.trust_domains)) return;
    for (std::size_t i = 0; i < s.trust_domains.size(); ++i)
      if (std::string written = s.trust_domains[i]; !trust_domain_name(s.trust_domains[i]))
        r.error(v.IsSequence() ? v[i] : v,
                path + ".trust_domains: '" + written +
                    "' is not a trust domain name (lower-case letters, digits, '.', '-', '_', "
                    "as in spiffe://NAME/...)");
  });
}

void parse_tls(reader& r, const YAML::Node& n, const std::string& path, tls_options& t) {
  t.where = r.at(n);
  r.map(n, path,
        {"cert", "key", "key_password_file", "key_pin_file", "pkcs12", "pkcs12_password_file",
         "min_version", "max_version", "cipher_suites", "ciphers", "curves", "alpn",
         "session_resumption", "certificates", "strict_sni", "spiffe"});
  with(n, "cert", [&](auto v) { r.file(v, path + ".cert", t.cert); });
  with(n, "key", [&](auto v) { r.key_file(v, path + ".key", t.key); });
  with(n, "key_password_file",
       [&](auto v) { r.file(v, path + ".key_password_file", t.key_password_file); });
  with(n, "key_pin_file", [&](auto v) { r.file(v, path + ".key_pin_file", t.key_pin_file); });
  check_key_secrets(r, n, path, t.key, t.key_password_file, t.key_pin_file);
  with(n, "pkcs12", [&](auto v) { r.file(v, path + ".pkcs12", t.pkcs12); });
  with(n, "pkcs12_password_file",
       [&](auto v) { r.file(v, path + ".pkcs12_password_file", t.pkcs12_password_file); });
  auto version = [&](const char* key, std::string& out) {
    with(n, key, [&](auto v) {
      std::string s;
      if (r.str(v, path + "." + key, s)) {
        if (s == "1.2" || s == "1.3")
          out = s;
        else
          r.error(v, path + "." + key + ": unsupported TLS version '" + s +
                         "': expected \"1.2\" or \"1.3\"");
      }
    });
  };
  version("min_version", t.min_version);
  version("max_version", t.max_version);
  if (t.min_version > t.max_version)
    r.error(t.where,
            path + ": min_version " + t.min_version + " is above max_version " + t.max_version);
  with(n, "cipher_suites", [&](auto v) { r.str(v, path + ".cipher_suites", t.cipher_suites); });
  with(n, "ciphers", [&](auto v) { r.str(v, path + ".ciphers", t.ciphers); });
  with(n, "curves", [&](auto v) { r.str(v, path + ".curves", t.curves); });
  with(n, "alpn", [&](auto v) {
    if (!r.strings(v, path + ".alpn", t.alpn)) return;
    for (const auto& p : t.alpn)
      if (p.empty() || p.size() > 255)
        r.error(v, path + ".alpn: protocol names must be 1 to 255 bytes");
  });
  with(n, "session_resumption",
       [&](auto v) { r.boolean(v, path + ".session_resumption", t.session_resumption); });
  with(n, "strict_sni", [&](auto v) { r.boolean(v, path + ".strict_sni", t.strict_sni); });
  with(n, "certificates", [&](auto v) { parse_certificates(r, v, path + ".certificates", t); });
  with(n, "spiffe", [&](auto v) { parse_spiffe(r, v, path + ".spiffe", t.spiffe); });
}

void parse_revocation(reader& r, const YAML::Node& n, const std::string& path,
                      revocation_options& rv) {
  r.map(n, path,
        {"crl_files", "crl_distribution_points", "crl_scope", "ocsp", "ocsp_responder",
         "ocsp_timeout", "on_unavailable", "crl_grace", "recheck_established", "stapling",
         "require_staple"});
  with(n, "crl_files", [&](auto v) { r.files(v, path + ".crl_files", rv.crl_files); });
  with(n, "crl_distribution_points", [&](auto v) {
    r.boolean(v, path + ".crl_distribution_points", rv.crl_distribution_points);
  });
  with(n, "crl_scope", [&](auto v) {
    r.choice(v, path + ".crl_scope", {{"leaf", crl_scope::leaf}, {"chain", crl_scope::chain}},
             rv.scope);
  });
  with(n, "ocsp", [&](auto v) {
    r.choice(v, path + ".ocsp",
             {{"off", ocsp_mode::off},
              {"false", ocsp_mode::off},
              {"leaf", ocsp_mode::leaf},
              {"chain", ocsp_mode::chain}},
             rv.ocsp);
  });
  with(n, "ocsp_responder", [&](auto v) {
    if (r.str(v, path + ".ocsp_responder", rv.ocsp_responder) && !rv.ocsp_responder.empty() &&
        rv.ocsp_responder.rfind("http://", 0) != 0)
      r.error(v, path +
                     ".ocsp_responder: only http:// responder URLs are supported (OCSP is signed, "
                     "so TLS adds nothing)");
  });
  with(n, "ocsp_timeout", [&](auto v) { r.dur(v, path + ".ocsp_timeout", rv.ocsp_timeout); });
  with(n, "on_unavailable", [&](auto v) {
    r.choice(v, path + ".on_unavailable",
             {{"fail", unavailable_policy::fail}, {"allow", unavailable_policy::allow}},
             rv.on_unavailable);
  });
  with(n, "crl_grace", [&](auto v) { r.dur(v, path + ".crl_grace", rv.crl_grace); });
  with(n, "recheck_established",
       [&](auto v) { r.boolean(v, path + ".recheck_established", rv.recheck_established); });
  with(n, "stapling", [&](auto v) { r.boolean(v, path + ".stapling", rv.stapling); });
  with(n, "require_staple",
       [&](auto v) { r.boolean(v, path + ".require_staple", rv.require_staple); });
}

// listeners[].upstream_check. A check in client mode can only be tcp: there the upstream is a
// TLS server, and a plain HTTP request to it would say nothing about its health.
void parse_upstream_check(reader& r, const YAML::Node& n, const std::string& path, bool server,
                          upstream_check_options& c) {
  c.enabled = true;
  if (n.IsNull()) return;  // `upstream_check:` alone: a tcp check with the defaults
  r.map(n, path, {"type", "path", "interval", "timeout"});
  with(n, "type", [&](auto v) {
    r.choice(v, path + ".type",
             {{"tcp", upstream_check_type::tcp}, {"http", upstream_check_type::http}}, c.type);
  });
  with(n, "path", [&](auto v) {
    if (!r.str(v, path + ".path", c.path)) return;
    const bool clean = std::none_of(c.path.begin(), c.path.end(), [](unsigned char ch) {
      return ch <= 0x20 || ch == 0x7f || ch == '#';
    });
    if (c.path.empty() || c.path.front() != '/' || !clean)
      r.error(v, path + ".path: '" + c.path +
                     "' must start with / and hold no spaces, control characters or '#'");
    else if (c.type != upstream_check_type::http)
      r.error(v, path + ".path applies to type: http only");
  });
  with(n, "interval", [&](auto v) {
    if (r.dur(v, path + ".interval", c.interval) && c.interval.count() == 0)
      r.error(v, path + ".interval must be greater than 0");
  });
  with(n, "timeout", [&](auto v) {
    if (r.dur(v, path + ".timeout", c.timeout) && c.timeout.count() == 0)
      r.error(v, path + ".timeout must be greater than 0");
    else if (c.timeout > c.interval)
      r.error(v, path + ".timeout (" + format_duration(c.timeout) + ") must not exceed " + path +
                     ".interval (" + format_duration(c.interval) + ")");
  });
  if (!server && c.type == upstream_check_type::http)
    r.error(n["type"], path +
                           ".type: http applies to mode: server only (in client mode the "
                           "upstream speaks TLS; use tcp)");
}

// allowed_sources, accept_proxy_protocol and limits: what is decided before any TLS work.
void parse_admission(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  with(n, "allowed_sources",
       [&](auto v) { r.cidrs(v, path + ".allowed_sources", l.allowed_sources); });
  with(n, "accept_proxy_protocol", [&](auto v) {
    const std::string p = path + ".accept_proxy_protocol";
    auto& a = l.accept_proxy_protocol;
    a.enabled = true;
    r.map(v, p, {"versions", "trusted_sources"});
    with(v, "versions", [&](auto x) {
      std::vector<std::string> versions;
      if (!r.strings(x, p + ".versions", versions)) return;
      a.v1 = a.v2 = false;
      for (const auto& ver : versions) {
        if (ver == "v1")
          a.v1 = true;
        else if (ver == "v2")
          a.v2 = true;
        else
          r.error(x, p + ".versions: unknown version '" + ver + "': expected v1 or v2");
      }
      if (versions.empty()) r.error(x, p + ".versions: name at least one of v1, v2");
    });
    with(v, "trusted_sources",
         [&](auto x) { r.cidrs(x, p + ".trusted_sources", a.trusted_sources); });
  });
  with(n, "limits", [&](auto v) {
    const std::string p = path + ".limits";
    auto& lim = l.limits;
    r.map(v, p,
          {"connections_per_second", "burst", "max_connections_per_source",
           "max_connections_per_identity", "max_pending_handshakes"});
    const auto count = [&](const char* key, int& out) {
      with(v, key, [&](auto x) { r.integer_into(x, p + "." + key, 0, 10'000'000, out); });
    };
    count("connections_per_second", lim.connections_per_second);
    count("burst", lim.burst);
    count("max_connections_per_source", lim.max_connections_per_source);
    count("max_connections_per_identity", lim.max_connections_per_identity);
    count("max_pending_handshakes", lim.max_pending_handshakes);
    if (lim.burst > 0 && lim.connections_per_second == 0)
      r.error(v["burst"], p + ".burst needs connections_per_second (the rate that refills it)");
  });
  // A peer on a unix socket has no IP address to match: only a PROXY header can give it one.
  if (l.listen.is_unix() && !l.accept_proxy_protocol.enabled && !l.allowed_sources.empty())
    r.error(n["allowed_sources"], path +
                                      ".allowed_sources: a unix-socket listener's peers have no "
                                      "IP address (use accept_proxy_protocol, or drop the list)");
  if (l.listen.is_unix() && !l.accept_proxy_protocol.trusted_sources.empty())
    r.error(n["accept_proxy_protocol"]["trusted_sources"],
            path +
                ".accept_proxy_protocol.trusted_sources: a unix-socket listener's peers have no "
                "IP address (use [] and the socket's permissions)");
}

void parse_listener(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  l.where = r.at(n);
  if (!n.IsMap()) {
    r.error(n, path + ": expected a mapping describing a listener, got " + reader::kind(n));
    return;
  }
  r.map(n, path,
        {"name", "mode", "listen", "upstream", "max_connections", "timeouts", "tls", "client_auth",
         "server_auth", "revocation", "proxy_protocol", "http", "upstream_check", "allowed_sources",
         "accept_proxy_protocol", "limits"});
  const YAML::Node name = n["name"];
  empty_value_scope name_scope(n, "name");
  if (!name.IsDefined())
    r.error(n, path + ": missing required key 'name'");
  else if (r.str(name, path + ".name", l.name)) {
    bool ok = !l.name.empty() && std::all_of(l.name.begin(), l.name.end(), [](unsigned char c) {
      return std::isalnum(c) || c == '_' || c == '-' || c == '.';
    });
    if (!ok)
      r.error(name, path + ".name: '" + l.name +
                        "' must be non-empty and use only letters, digits, '_', '-' and '.'");
  }
  with(n, "mode", [&](auto v) {
    r.choice(v, path + ".mode",
             {{"server", listener_mode::server}, {"client", listener_mode::client}}, l.mode);
  });
  const YAML::Node listen = n["listen"];
  empty_value_scope listen_scope(n, "listen");
  if (!listen.IsDefined())
    r.error(n, path + ": missing required key 'listen'");
  else
    r.addr(listen, path + ".listen", l.listen);
  const YAML::Node upstream = n["upstream"];
  empty_value_scope upstream_scope(n, "upstream");
  if (!upstream.IsDefined())
    r.error(n, path + ": missing required key 'upstream'");
  else if (r.addr(upstream, path + ".upstream", l.upstream)) {
    if (l.upstream.type == address::kind::tcp && l.upstream.port == 0)
      r.error(upstream, path + ".upstream: port 0 is not a valid destination");
  }
  with(n, "max_connections", [&](auto v) {
    r.integer_into(v, path + ".max_connections", 1, 10'000'000, l.max_connections);
  });
  with(n, "timeouts", [&](auto v) {
    const std::string p = path + ".timeouts";
    r.map(v, p, {"handshake", "connect", "idle", "half_close", "max_connection_age"});
    with(v, "handshake", [&](auto x) { r.dur(x, p + ".handshake", l.timeouts.handshake); });
    with(v, "connect", [&](auto x) { r.dur(x, p + ".connect", l.timeouts.connect); });
    with(v, "idle", [&](auto x) { r.dur(x, p + ".idle", l.timeouts.idle); });
    with(v, "half_close", [&](auto x) { r.dur(x, p + ".half_close", l.timeouts.half_close); });
    with(v, "max_connection_age",
         [&](auto x) { r.dur(x, p + ".max_connection_age", l.timeouts.max_connection_age); });
    if (l.timeouts.handshake.count() == 0) r.error(v, p + ".handshake must be greater than 0");
    if (l.timeouts.connect.count() == 0) r.error(v, p + ".connect must be greater than 0");
  });
  parse_admission(r, n, path, l);
  const YAML::Node tls = n["tls"];
  if (tls.IsDefined())
    parse_tls(r, tls, path + ".tls", l.tls);
  else
    l.tls.where = l.where;

  const YAML::Node ca_node = n["client_auth"];
  if (ca_node.IsDefined()) {
    const std::string p = path + ".client_auth";
    auto& ca = l.client_auth;
    ca.where = r.at(ca_node);
    r.map(ca_node, p, {"mode", "ca", "verify_depth", "allow"});
    with(ca_node, "mode", [&](auto v) {
      r.choice(v, p + ".mode",
               {{"require", client_auth_mode::require},
                {"optional", client_auth_mode::optional},
                {"none", client_auth_mode::none}},
               ca.mode);
    });
    with(ca_node, "ca", [&](auto v) { r.files(v, p + ".ca", ca.ca); });
    with(ca_node, "verify_depth",
         [&](auto v) { r.integer_into(v, p + ".verify_depth", 0, 32, ca.verify_depth); });
    with(ca_node, "allow",
         [&](auto v) { parse_allow(r, v, p + ".allow", ca.allow, rule_side::client_auth); });
  } else {
    l.client_auth.where = l.where;
  }
  const YAML::Node sa_node = n["server_auth"];
  if (sa_node.IsDefined()) {
    const std::string p = path + ".server_auth";
    auto& sa = l.server_auth;
    r.map(sa_node, p, {"ca", "server_name", "verify_depth", "allow", "insecure_skip_verify"});
    with(sa_node, "verify_depth",
         [&](auto v) { r.integer_into(v, p + ".verify_depth", 0, 32, sa.verify_depth); });
    with(sa_node, "ca", [&](auto v) { r.files(v, p + ".ca", sa.ca); });
    with(sa_node, "server_name", [&](auto v) { r.str(v, p + ".server_name", sa.server_name); });
    with(sa_node, "allow",
         [&](auto v) { parse_allow(r, v, p + ".allow", sa.allow, rule_side::server_auth); });
    with(sa_node, "insecure_skip_verify",
         [&](auto v) { r.boolean(v, p + ".insecure_skip_verify", sa.insecure_skip_verify); });
    // Without verification there is no verified identity to match: an allow list would be
    // ignored in silence, admitting any remote the operator meant to restrict.
    if (sa.insecure_skip_verify && !sa.allow.empty())
      r.error(sa_node["insecure_skip_verify"],
              p + ".insecure_skip_verify: true cannot be combined with " + p +
                  ".allow (nothing is verified, so the allow list could never be enforced)");
  }
  with(n, "revocation",
       [&](auto v) { parse_revocation(r, v, path + ".revocation", l.revocation); });
  with(n, "proxy_protocol", [&](auto v) {
    r.choice(v, path + ".proxy_protocol",
             {{"off", proxy_protocol_mode::off},
              {"false", proxy_protocol_mode::off},
              {"v2", proxy_protocol_mode::v2}},
             l.proxy_protocol);
  });
  with(n, "http", [&](auto v) {
    const std::string p = path + ".http";
    l.http.enabled = true;
    r.map(v, p,
          {"forward_client_cert_details", "set_current_client_cert_details", "protocols",
           "upstream_protocol", "x_forwarded_for", "x_forwarded_proto", "max_concurrent_streams",
           "stream_idle_timeout"});
    with(v, "forward_client_cert_details", [&](auto x) {
      r.choice(x, p + ".forward_client_cert_details",
               {{"sanitize", xfcc_mode::sanitize},
                {"forward_only", xfcc_mode::forward_only},
                {"append_forward", xfcc_mode::append_forward},
                {"sanitize_set", xfcc_mode::sanitize_set},
                {"always_forward_only", xfcc_mode::always_forward_only}},
               l.http.forward_client_cert_details);
    });
    with(v, "set_current_client_cert_details", [&](auto x) {
      if (!r.strings(x, p + ".set_current_client_cert_details",
                     l.http.set_current_client_cert_details))
        return;
      static const std::set<std::string> known = {"uri", "dns", "subject", "hash", "cert", "chain"};
      for (const auto& d : l.http.set_current_client_cert_details)
        if (!known.count(d))
          r.error(x, p + ".set_current_client_cert_details: unknown detail '" + d +
                         "': expected uri, dns, subject, hash, cert or chain");
    });
    // HTTP/2 (issue 15). The ALPN offered on an http listener is http.protocols, not tls.alpn.
    with(v, "protocols", [&](auto x) {
      if (!r.strings(x, p + ".protocols", l.http.protocols)) return;
      for (const auto& proto : l.http.protocols)
        if (proto != "h2" && proto != "http/1.1")
          r.error(x, p + ".protocols: unknown protocol '" + proto + "': expected h2 or http/1.1");
      if (l.http.protocols.empty()) r.error(x, p + ".protocols: name at least one protocol");
    });
    with(v, "upstream_protocol", [&](auto x) {
      r.choice(x, p + ".upstream_protocol",
               {{"http/1.1", http_upstream_protocol::http1},
                {"h2c", http_upstream_protocol::h2c},
                {"same", http_upstream_protocol::same}},
               l.http.upstream_protocol);
    });
    with(v, "x_forwarded_for", [&](auto x) {
      r.choice(x, p + ".x_forwarded_for", {{"append", true}, {"off", false}},
               l.http.x_forwarded_for);
    });
    with(v, "x_forwarded_proto", [&](auto x) {
      r.choice(x, p + ".x_forwarded_proto", {{"set", true}, {"off", false}},
               l.http.x_forwarded_proto);
    });
    with(v, "max_concurrent_streams", [&](auto x) {
      r.integer_into(x, p + ".max_concurrent_streams", 1, 1'000'000, l.http.max_concurrent_streams);
    });
    with(v, "stream_idle_timeout",
         [&](auto x) { r.dur(x, p + ".stream_idle_timeout", l.http.stream_idle_timeout); });
    // The ALPN an http listener offers is http.protocols. A tls.alpn (the way to offer
    // http/1.1 before HTTP/2 was served) stands for it when protocols is not given.
    if (!l.tls.alpn.empty()) {
      if (!v["protocols"]) l.http.protocols = l.tls.alpn;
      if (l.tls.alpn != l.http.protocols)
        r.error(v, p + ".protocols and " + path +
                       ".tls.alpn differ: on an http listener the "
                       "ALPN offered is " +
                       p + ".protocols; drop tls.alpn");
      for (const auto& proto : l.tls.alpn)
        if (proto != "h2" && proto != "http/1.1")
          r.error(v, path + ".tls.alpn: an http listener speaks h2 and http/1.1 only, not '" +
                         proto + "'");
    }
    // An HTTP/1.1 request cannot be translated to h2c here: HTTP/1.1 clients need an HTTP/1.1
    // upstream (upstream_protocol: same serves both kinds of client).
    if (l.http.upstream_protocol == http_upstream_protocol::h2c && l.http.offers("http/1.1"))
      r.error(v, p + ".upstream_protocol: h2c needs protocols: [h2] (HTTP/1.1 clients are "
                     "not translated to h2c; use upstream_protocol: same to serve both)");
  });

  // Cross-field rules: catch contradictions here rather than as odd runtime behaviour.
  const bool server = l.mode == listener_mode::server;
  with(n, "upstream_check", [&](auto v) {
    parse_upstream_check(r, v, path + ".upstream_check", server, l.upstream_check);
  });
  const bool has_pem = !l.tls.cert.empty() || !l.tls.key.empty();
  const bool has_list = !l.tls.certificates.empty();
  if (has_list && (has_pem || !l.tls.pkcs12.empty() || !l.tls.key_password_file.empty() ||
                   !l.tls.key_pin_file.empty() || !l.tls.pkcs12_password_file.empty()))
    r.error(l.tls.certificates_where,
            path + ".tls.certificates: give either certificates or cert/key/pkcs12, not both");
  if (has_list && !server)
    r.error(l.tls.certificates_where,
            path + ".tls.certificates applies to mode: server only (a client presents one)");
  if (l.tls.strict_sni && !server)
    r.error(n["tls"]["strict_sni"], path + ".tls.strict_sni applies to mode: server only");
  if (has_list && l.revocation.stapling && l.tls.certificates.size() > 1)
    r.error(n["revocation"]["stapling"],
            path +
                ".revocation.stapling: not supported with several tls.certificates yet (staple "
                "with one certificate, or turn stapling off)");
  const bool spiffe = l.tls.spiffe.enabled;
  if (spiffe && (has_pem || has_list || !l.tls.pkcs12.empty() || !l.tls.key_password_file.empty() ||
                 !l.tls.pkcs12_password_file.empty()))
    r.error(l.tls.spiffe.where,
            path +
                ".tls.spiffe: the Workload API supplies the certificate and key: give either "
                "spiffe or cert/key/pkcs12/certificates, not both");
  if (spiffe && l.revocation.stapling)
    r.error(n["revocation"]["stapling"],
            path +
                ".revocation.stapling: not supported with tls.spiffe (an X.509-SVID names no "
                "OCSP responder)");
  if (has_pem && !l.tls.pkcs12.empty())
    r.error(l.tls.where, path + ".tls: give either cert + key or pkcs12, not both");
  if (!l.tls.cert.empty() && l.tls.key.empty())
    r.error(l.tls.where, path + ".tls: 'cert' is set but 'key' is missing");
  if (l.tls.cert.empty() && !l.tls.key.empty())
    r.error(l.tls.where, path + ".tls: 'key' is set but 'cert' is missing");
  if (server) {
    if (!has_pem && l.tls.pkcs12.empty() && !has_list && !spiffe)
      r.error(
          l.tls.where,
          path + ".tls: a server-mode listener needs its certificate: set cert + key or pkcs12");
    // With tls.spiffe the trust bundles are the CAs, unless client_auth.ca names files.
    if (l.client_auth.mode != client_auth_mode::none && l.client_auth.ca.empty() && !spiffe)
      r.error(l.client_auth.where,
              path + ".client_auth.ca: client certificates are required (mode " +
                  (l.client_auth.mode == client_auth_mode::require ? "require" : "optional") +
                  ") but no CA bundle is configured");
    if (sa_node.IsDefined())
      r.error(sa_node, path + ".server_auth applies to mode: client only (use client_auth)");
  } else {
    if (ca_node.IsDefined())
      r.error(ca_node, path + ".client_auth applies to mode: server only (use server_auth)");
    // The remote's SVID names no host: without a CA file or a server_name to check, its SPIFFE
    // ID is what authenticates it, so it must be named.
    if (spiffe && l.server_auth.ca.empty() && l.server_auth.server_name.empty() &&
        l.server_auth.allow.empty())
      r.error(l.tls.spiffe.where,
              path +
                  ".tls.spiffe in mode: client: name the remote's SPIFFE ID in "
                  "server_auth.allow.spiffe_ids (an X.509-SVID carries no host name to check), "
                  "or set server_auth.server_name");
    if (l.upstream.is_unix())
      r.error(upstream,
              path + ".upstream: a client-mode listener connects to a TLS server over TCP");
    if (l.proxy_protocol != proxy_protocol_mode::off)
      r.error(n["proxy_protocol"], path + ".proxy_protocol applies to mode: server only");
    if (l.http.enabled) r.error(n["http"], path + ".http applies to mode: server only");
    if (l.revocation.stapling)
      r.error(n["revocation"], path + ".revocation.stapling applies to mode: server only");
  }
  if (server && l.revocation.require_staple) {
    r.error(n["revocation"]["require_staple"],
            path +
                ".revocation.require_staple applies to mode: client only (a client's "
                "certificate cannot be stapled)");
  }
}

// dns.servers: IP:PORT entries. A DNS server cannot itself be found by name, and c-ares takes
// addresses only.
void parse_dns_servers(reader& r, const YAML::Node& n, std::vector<address>& out) {
  out.clear();
  if (n.IsNull()) return;
  if (!n.IsSequence() && !n.IsScalar()) {  // one scalar is one server, as for other lists
    r.error(n, "dns.servers: expected a list of IP:PORT addresses, got " + reader::kind(n));
    return;
  }
  const std::size_t count = n.IsScalar() ? 1 : n.size();
  for (std::size_t i = 0; i < count; ++i) {
    const YAML::Node item = n.IsScalar() ? n : n[i];
    const std::string path =
        n.IsScalar() ? std::string("dns.servers") : "dns.servers[" + std::to_string(i) + "]";
    address a;
    if (!r.addr(item, path, a)) continue;
    in6_addr scratch{};
    const bool ip = ::inet_pton(AF_INET, a.host.c_str(), &scratch) == 1 ||
                    ::inet_pton(AF_INET6, a.host.c_str(), &scratch) == 1;
    if (a.is_unix()) {
      r.error(item, path + ": a DNS server is an IP:PORT address, not a unix socket");
    } else if (!ip) {
      r.error(item, path + ": '" + a.host +
                        "' is not an IP address (a DNS server cannot be found by name)");
    } else if (a.port == 0) {
      r.error(item, path + ": port 0 is not a DNS server's port (53 is the usual one)");
    } else {
      out.push_back(a);
    }
  }
}

configuration parse_root(reader& r, const YAML::Node& root, const std::string& file) {
  configuration c;
  c.file = file;
  if (!root.IsMap()) {
    r.error(root, "expected a mapping at the top level (admin, log, listeners, ...), got " +
                      reader::kind(root));
    return c;
  }
  r.map(root, "the top level",
        {"admin", "log", "workers", "reload", "shutdown", "dns", "sandbox", "listeners"});
  with(root, "admin", [&](auto v) {
    r.map(v, "admin", {"address"});
    with(v, "address", [&](auto a) {
      std::string text;
      if (!r.str(a, "admin.address", text)) return;
      if (text.empty()) {
        c.admin.listen.reset();
        return;
      }
      address parsed;
      if (r.addr(a, "admin.address", parsed)) c.admin.listen = parsed;
    });
  });
  with(root, "log", [&](auto v) {
    r.map(v, "log", {"level", "format", "access_log", "access_log_path"});
    with(v, "level", [&](auto x) {
      std::string level;
      r.choice(x, "log.level",
               {{"trace", std::string("trace")},
                {"debug", std::string("debug")},
                {"info", std::string("info")},
                {"warn", std::string("warn")},
                {"error", std::string("error")}},
               c.log.level);
      (void)level;
    });
    with(v, "format", [&](auto x) {
      r.choice(x, "log.format", {{"text", log_format::text}, {"json", log_format::json}},
               c.log.format);
    });
    with(v, "access_log", [&](auto x) { r.boolean(x, "log.access_log", c.log.access_log); });
    with(v, "access_log_path", [&](auto x) {
      std::string raw;
      if (!r.str(x, "log.access_log_path", raw)) return;
      c.log.access_log_path_where = r.at(x);
      if (raw.empty() || raw == "stderr" || raw == "stdout") {
        c.log.access_log_path = raw == "stderr" ? "" : raw;
        return;
      }
      const file_ref f = r.resolve(raw, x);
      c.log.access_log_path = f.path;
      if (auto why = unwritable_log_file(f.path))
        r.error(x, "log.access_log_path: cannot write '" + f.path + "': " + *why);
    });
  });
  with(root, "workers", [&](auto v) { r.integer_into(v, "workers", 0, 1024, c.workers); });
  with(root, "sandbox", [&](auto v) { r.boolean(v, "sandbox", c.sandbox); });
  with(root, "reload", [&](auto v) {
    r.map(v, "reload", {"watch", "poll_interval"});
    with(v, "watch", [&](auto x) { r.boolean(x, "reload.watch", c.reload.watch); });
    with(v, "poll_interval",
         [&](auto x) { r.dur(x, "reload.poll_interval", c.reload.poll_interval); });
  });
  with(root, "shutdown", [&](auto v) {
    r.map(v, "shutdown", {"drain_timeout"});
    with(v, "drain_timeout",
         [&](auto x) { r.dur(x, "shutdown.drain_timeout", c.shutdown.drain_timeout); });
  });
  with(root, "dns", [&](auto v) {
    r.map(v, "dns", {"servers"});
    with(v, "servers", [&](auto x) { parse_dns_servers(r, x, c.dns.servers); });
  });
  const YAML::Node ls = root["listeners"];
  if (!ls.IsDefined() || ls.IsNull()) {
    r.error(root, "no listeners configured: add at least one under 'listeners:'");
  } else if (!ls.IsSequence()) {
    r.error(ls, "listeners: expected a list of listeners, got " + reader::kind(ls));
  } else {
    std::set<std::string> names;
    std::vector<std::pair<address, std::string>> bound;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      listener l;
      const std::string path = "listeners[" + std::to_string(i) + "]";
      parse_listener(r, ls[i], path, l);
      if (!l.name.empty() && !names.insert(l.name).second)
        r.error(ls[i]["name"], path + ".name: duplicate listener name '" + l.name + "'");
      for (const auto& [a, other] : bound)
        if (a == l.listen && !(a.type == address::kind::tcp && a.port == 0))
          r.error(ls[i]["listen"],
                  path + ".listen: " + a.str() + " is already used by listener '" + other + "'");
      bound.emplace_back(l.listen, l.name);
      c.listeners.push_back(std::move(l));
    }
    if (ls.size() == 0) r.error(ls, "no listeners configured: add at least one under 'listeners:'");
  }
  return c;
}

// Where the second YAML document of `text` starts, if there is one. YAML::Load reads only the
// first, so a file with `---` and more would silently lose the rest (and any error in it).
class document_starts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  document_starts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  if (starts.marks.size() < 2) return std::nullopt;
  return starts.marks[1];
}

load_result finish(configuration c, diagnostics problems) {
  load_result out;
  out.problems = std::move(problems);
  if (!has_errors(out.problems)) out.config = std::move(c);
  return out;
}

}  // namespace

const listener* configuration::find_listener(std::string_view name) const {
  for (const auto& l : listeners)
    if (l.name == name) return &l;
  return nullptr;
}

std::vector<file_ref> configuration::referenced_files() const {
  std::vector<file_ref> out;
  auto add = [&](const file_ref& f) {
    if (f.empty()) return;
    // A pkcs11: key is no file; the PIN file its URI names is (the module is not: it is code,
    // loaded once, and src/daemon/sandbox.cpp lets the sandbox read it).
    if (!is_pkcs11_uri(f.path)) return out.push_back(f);
    pkcs11_uri uri;
    if (parse_pkcs11_uri(f.path, uri).empty() && !uri.pin_source.empty())
      out.push_back({uri.pin_source, f.where});
  };
  for (const auto& l : listeners) {
    for (const auto* f : {&l.tls.cert, &l.tls.key, &l.tls.key_password_file, &l.tls.key_pin_file,
                          &l.tls.pkcs12, &l.tls.pkcs12_password_file})
      add(*f);
    for (const auto& e : l.tls.certificates)
      for (const auto* f : {&e.cert, &e.key, &e.key_password_file, &e.key_pin_file, &e.pkcs12,
                            &e.pkcs12_password_file})
        add(*f);
    for (const auto& f : l.client_auth.ca)
      add(f);
    for (const auto& f : l.server_auth.ca)
      add(f);
    for (const auto& f : l.revocation.crl_files)
      add(f);
  }
  return out;
}

load_result load_text(const std::string& text, const std::string& file) {
  diagnostics problems;
  reader r(file, problems);
  YAML::Node root;
  try {
    root = YAML::Load(text);
    if (auto second = second_document(text))
      problems.push_back({{file, second->line + 1, second->column + 1},
                          "a second YAML document starts here: a configuration file holds exactly "
                          "one (remove the '---' line and what follows, or merge it into the "
                          "first)"});
  } catch (const YAML::ParserException& e) {
    problems.push_back({{file, e.mark.line + 1, e.mark.column + 1}, "YAML syntax error: " + e.msg});
    return finish({}, std::move(problems));
  }
  configuration c = parse_root(r, root, file);
  return finish(std::move(c), std::move(problems));
}

load_result load_file(const std::string& path) {
  std::string absolute = fs::absolute(path).lexically_normal().string();
  std::ifstream in(absolute, std::ios::binary);
  if (!in) {
    load_result out;
    out.problems.push_back(
        {{absolute, 0, 0}, std::string("cannot read configuration file: ") + std::strerror(errno)});
    return out;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return load_text(buf.str(), absolute);
}

}  // namespace mtlsd::config
