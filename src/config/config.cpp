// The helpers of config.hpp's configuration.
#include "mtlsd/config/config.hpp"

#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::config {

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
    for (const auto* f : l.tls.files())
      add(*f);
    for (const auto& e : l.tls.certificates)
      for (const auto* f : e.files())
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

}  // namespace mtlsd::config
