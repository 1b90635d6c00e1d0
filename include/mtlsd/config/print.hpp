#pragma once
// `mtlsd check --print`: the effective configuration as YAML, like `nginx -T`.
#include <string>

#include "mtlsd/config/config.hpp"

namespace mtlsd::config {

// Every key with its effective value (defaults filled in, file paths resolved to absolute),
// in the order of the configuration reference. The output loads again with load_text to the same
// configuration, except inline secrets, replaced by "REDACTED" (a key's pkcs11 URI's pin-value,
// which the loader then refuses; the password in ocsp_responder's userinfo); other values are
// printed as loaded. Files that hold secrets are shown by path only, never read.
// A key added to config.hpp must be added here too.
std::string print_yaml(const configuration& c);

// `text` with inline secrets replaced by "REDACTED" (see print_yaml).
std::string redact(const std::string& text);

}  // namespace mtlsd::config
