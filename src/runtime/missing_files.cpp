#include "mtlsd/runtime/missing_files.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::runtime {
namespace {

// `kind` as the loaders in tls/credentials.cpp name what they read, and so is `secret_key`, the
// key of a password file: its path is left out, as it may be the password pasted (review).
void look(const config::file_ref& f, std::string_view kind, config::diagnostics& out,
          std::string_view secret_key = {}) {
  // Left to the loader: a pkcs11: key, and text that is no path (a PEM block pasted in its
  // place), which the loader's error shows without its content.
  if (f.empty() || config::is_pkcs11_uri(f.path) ||
      f.path.find("-----BEGIN") != std::string::npos || f.path.find('\n') != std::string::npos)
    return;
  struct stat st {};
  if (::stat(f.path.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR)) return;
  const std::string why = std::strerror(errno);
  out.push_back({f.where,
                 secret_key.empty()
                     ? f.path + ": cannot read " + std::string(kind) + ": " + why
                     : std::string(secret_key) + ": cannot read the " + std::string(kind) + " (" +
                           why + "); its path is not shown, as it may be a pasted secret",
                 false});
}

// The files load_key_pair reads, and only those: a leftover password file of the other kind is
// never read, and must not stop a configuration that loads (review).
void look_at_key_source(const config::key_source& k, config::diagnostics& out) {
  if (!k.pkcs12.empty()) {
    look(k.pkcs12, "PKCS#12 bundle", out);
    look(k.pkcs12_password_file, "password file", out, "pkcs12_password_file");
    return;
  }
  look(k.cert, "certificate", out);
  // A pkcs11: key's PIN file is read only when its token asks for a login: left to the loader.
  if (config::is_pkcs11_uri(k.key.path)) return;
  look(k.key, "private key", out);
  look(k.key_password_file, "password file", out, "key_password_file");
}

}  // namespace

config::diagnostics missing_files(const config::listener& l) {
  config::diagnostics out;
  const bool server = l.mode == config::listener_mode::server;
  // A client-mode listener presents a certificate only when one is given (tls/context.cpp).
  const bool own_key = server || !l.tls.cert.empty() || !l.tls.pkcs12.empty();
  if (!l.tls.spiffe.enabled && own_key) {
    look_at_key_source(l.tls, out);
    for (const auto& e : l.tls.certificates)
      look_at_key_source(e, out);
  }
  // The files of the peer's side only where the build loads them.
  if (server && l.client_auth.mode == config::client_auth_mode::none) return out;
  for (const auto& f : server ? l.client_auth.ca : l.server_auth.ca)
    look(f, "certificate", out);
  // insecure_skip_verify judges nothing of the remote's: its CRL files are not loaded.
  if (l.server_auth.insecure_skip_verify) return out;
  for (const auto& f : l.revocation.crl_files)
    look(f, "CRL", out);
  return out;
}

}  // namespace mtlsd::runtime
