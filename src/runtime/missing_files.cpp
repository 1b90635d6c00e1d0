#include "mtlsd/runtime/missing_files.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::runtime {
namespace {

// `kind` as the loaders in tls/credentials.cpp name what they read.
void look(const config::file_ref& f, std::string_view kind, config::diagnostics& out) {
  // Left to the loader: a pkcs11: key, and text that is no path (a PEM block pasted in its
  // place), which the loader's error shows without its content.
  if (f.empty() || config::is_pkcs11_uri(f.path) ||
      f.path.find("-----BEGIN") != std::string::npos || f.path.find('\n') != std::string::npos)
    return;
  struct stat st {};
  if (::stat(f.path.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR)) return;
  out.push_back({f.where,
                 f.path + ": cannot read " + std::string(kind) + ": " + std::strerror(errno),
                 false});
}

void look_at_key_source(const config::key_source& k, config::diagnostics& out) {
  look(k.cert, "certificate", out);
  look(k.key, "private key", out);
  look(k.key_password_file, "password file", out);
  look(k.pkcs12, "PKCS#12 bundle", out);
  look(k.pkcs12_password_file, "password file", out);
}

}  // namespace

config::diagnostics missing_files(const config::listener& l) {
  config::diagnostics out;
  if (!l.tls.spiffe.enabled) {
    look_at_key_source(l.tls, out);
    for (const auto& e : l.tls.certificates)
      look_at_key_source(e, out);
  }
  // The files of the peer's side only where the build loads them.
  const bool server = l.mode == config::listener_mode::server;
  if (server && l.client_auth.mode == config::client_auth_mode::none) return out;
  for (const auto& f : server ? l.client_auth.ca : l.server_auth.ca)
    look(f, "certificate", out);
  for (const auto& f : l.revocation.crl_files)
    look(f, "CRL", out);
  return out;
}

}  // namespace mtlsd::runtime
