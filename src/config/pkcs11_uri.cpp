#include "mtlsd/config/pkcs11_uri.hpp"

#include <cctype>
#include <set>
#include <utility>

namespace mtlsd::config {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one attribute value; false on a malformed escape.
bool decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_digit(in[i + 1]);
    const int lo = hex_digit(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

// pin-source is a URI (RFC 7512 section 2.4); only local files make sense for a daemon.
std::string file_of(const std::string& source, std::string& path) {
  std::string_view s(source);
  if (s.rfind("file://", 0) == 0)
    s.remove_prefix(7);
  else if (s.rfind("file:", 0) == 0)
    s.remove_prefix(5);
  else if (s.find(':') != std::string_view::npos)
    return "pin-source must be a file (pin-source=file:/path/to/pin)";
  if (s.empty() || s.front() != '/')
    return "pin-source must name an absolute path (pin-source=file:/path/to/pin)";
  path = std::string(s);
  return {};
}

// Attribute names are lower-case words with dashes (RFC 7512 and its vendor "x-" ones).
bool looks_like_a_name(std::string_view name) {
  if (name.empty() || name.size() > 32 || !std::islower(static_cast<unsigned char>(name[0])))
    return false;
  for (const char c : name)
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-'))
      return false;
  return true;
}

// What `mtlsd check --print` writes in place of a pin-value (config/print.cpp).
constexpr std::string_view redacted_pin = "REDACTED";

// One decoded attribute into `out` (pin-source, still a URI, into `pin_source`); an error or "".
std::string apply_attribute(const std::string& name, std::string value, bool in_query,
                            pkcs11_uri& out, std::string& pin_source) {
  if (name == "pin-value") {
    // RFC 7512 makes it a query attribute (p11-kit and libp11 take it in the path too). Refused
    // there: `check --print` could not tell where such a PIN ends, and printed the URI cut short
    // after it (review).
    if (!in_query)
      return "pin-value belongs in the URI's query part, after '?' "
             "(pkcs11:...?pin-value=...; RFC 7512), or give the PIN in key_pin_file";
    // The placeholder of a printed configuration: logging in with it would spend one of the
    // token's few tries before it locks (review).
    if (value == redacted_pin)
      return "pin-value is REDACTED, the placeholder that mtlsd check --print writes for the PIN: "
             "the printed configuration's PIN was redacted and must be given again (or give it "
             "in key_pin_file)";
    out.pin_value = std::move(value);
  } else if (name == "token") {
    out.token = value;
  } else if (name == "serial") {
    out.serial = value;
  } else if (name == "manufacturer") {
    out.manufacturer = value;
  } else if (name == "model") {
    out.model = value;
  } else if (name == "object") {
    out.object = value;
  } else if (name == "id") {
    out.id = value;
    out.has_id = true;
  } else if (name == "type") {
    if (value != "private")
      return "type=" + value + ": only a private key can be used here (type=private)";
  } else if (name == "module-path") {
    out.module_path = value;
  } else if (name == "pin-source") {
    pin_source = value;
  } else if (name == "module-name") {
    return "module-name is not supported: name the module's file with module-path=";
  } else if (name.rfind("slot-", 0) == 0 || name.rfind("library-", 0) == 0 ||
             name.rfind("x-", 0) == 0) {
    // Slot and library attributes narrow what a multi-module proxy offers; the token
    // attributes identify the key well enough. Vendor attributes are ignored by the RFC.
  } else {
    // Quoted only when it looks like an attribute's name: text split off a PIN that holds a
    // separator must not reach a log (review).
    return std::string("unknown ") + (in_query ? "query " : "") + "attribute " +
           (looks_like_a_name(name) ? "'" + name + "'" : std::string("(not shown)")) +
           " (expected token, object, id, serial, manufacturer, model, type, "
           "module-path, pin-source or pin-value; a ';', '?' or '&' inside a value, a PIN's "
           "among them, must be %-escaped)";
  }
  return {};
}

// Attributes are ';'-separated in the path and '&'-separated in the query; an error or "".
// `seen`: the names met so far in the URI, as RFC 7512 allows each once (review: the last of
// two token= or module-path= silently won).
std::string apply_attributes(std::string_view part, char sep, bool in_query, pkcs11_uri& out,
                             std::string& pin_source, std::set<std::string>& seen) {
  while (!part.empty()) {
    const auto end = part.find(sep);
    const std::string_view attr = part.substr(0, end);
    part = end == std::string_view::npos ? std::string_view() : part.substr(end + 1);
    if (attr.empty()) continue;
    const auto eq = attr.find('=');
    if (eq == std::string_view::npos)  // not quoted: it may be a piece of a PIN
      return "an attribute has no value (expected name=value; a ';', '?' or '&' inside a "
             "value, a PIN's among them, must be %-escaped)";
    const std::string name(attr.substr(0, eq));
    if (!seen.insert(name).second)
      return "attribute " +
             (looks_like_a_name(name) ? "'" + name + "'" : std::string("(not shown)")) +
             " is given twice (RFC 7512 allows each once)";
    std::string value;
    if (!decode(attr.substr(eq + 1), value))
      return "attribute " +
             (looks_like_a_name(name) ? "'" + name + "'" : std::string("(not shown)")) +
             " has a malformed %-escape";
    if (auto why = apply_attribute(name, std::move(value), in_query, out, pin_source); !why.empty())
      return why;
  }
  return {};
}

// Rules across attributes, once all are read; an error or "".
std::string check_combination(const pkcs11_uri& out) {
  if (!out.module_path.empty() && out.module_path.front() != '/')
    return "module-path must be an absolute path to the PKCS#11 module (.so)";
  if (out.object.empty() && !out.has_id)
    return "names no key: give object=LABEL and/or id=%XX... (the key's CKA_ID)";
  if (!out.pin_source.empty() && !out.pin_value.empty())
    return "give pin-source or pin-value, not both";
  return {};
}

}  // namespace

bool is_pkcs11_uri(std::string_view s) {
  static constexpr std::string_view scheme = "pkcs11:";
  if (s.size() < scheme.size()) return false;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != scheme[i]) return false;
  return true;
}

std::string parse_pkcs11_uri(std::string_view s, pkcs11_uri& out) {
  out = {};
  if (!is_pkcs11_uri(s)) return "not a pkcs11: URI";
  s.remove_prefix(7);
  const auto q = s.find('?');
  const std::string_view path = s.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view() : s.substr(q + 1);
  std::string pin_source;
  std::set<std::string> seen;
  if (auto why = apply_attributes(path, ';', false, out, pin_source, seen); !why.empty())
    return why;
  if (auto why = apply_attributes(query, '&', true, out, pin_source, seen); !why.empty())
    return why;
  if (!pin_source.empty())
    if (auto why = file_of(pin_source, out.pin_source); !why.empty()) return why;
  return check_combination(out);
}

}  // namespace mtlsd::config
