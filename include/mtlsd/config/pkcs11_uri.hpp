#pragma once
// RFC 7512 `pkcs11:` URIs, as accepted wherever a private key's path is. Plain parsing only (the
// configuration stays a leaf); src/tls/pkcs11.cpp opens the token they name.
#include <string>
#include <string_view>

namespace mtlsd::config {

struct pkcs11_uri {
  // Token attributes (path part): an empty one matches any token.
  std::string token;  // the token's label
  std::string serial;
  std::string manufacturer;
  std::string model;
  // Object attributes: the private key is found by its label and/or CKA_ID (raw bytes).
  std::string object;
  std::string id;
  bool has_id = false;
  // Query part (module-path and pin-source also accepted in the path part, as libp11 and p11-kit
  // do; pin-value only in the query, where RFC 7512 puts it).
  std::string module_path;  // the PKCS#11 module (.so) to load; "" = the default
  std::string pin_source;   // an absolute file path holding the PIN ("" = none)
  std::string pin_value;    // the PIN itself, discouraged (it sits in the configuration); never
                            // "REDACTED", the placeholder of `check --print`'s output
};

// True when `s` starts with the (case-insensitive) scheme "pkcs11:".
bool is_pkcs11_uri(std::string_view s);

// Parses `s` into `out`; returns "" on success, else why it is not usable (never echoing a PIN).
std::string parse_pkcs11_uri(std::string_view s, pkcs11_uri& out);

}  // namespace mtlsd::config
