#pragma once
// tls.certificates: several certificates on one server-mode listener, chosen per handshake. The
// ClientHello callback picks the entries for the client's SNI (exact name, then `*.suffix`, then
// the default entries) and puts all of them on the connection; OpenSSL then picks among them by
// the client's signature algorithms (ECDSA for a client offering ECDSA, RSA otherwise).
#include <openssl/ssl.h>

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::tls {

class certificate_selector {
 public:
  // Loads every entry; throws config_error naming the entry (key mismatch, two certificates of
  // one key type for the same name, unreadable files).
  explicit certificate_selector(const config::tls_options& t);
  ~certificate_selector();
  certificate_selector(const certificate_selector&) = delete;
  certificate_selector& operator=(const certificate_selector&) = delete;

  // Loads the default entries into `ctx` (served without any per-handshake work) and installs
  // the ClientHello callback. This selector must outlive `ctx` and every SSL made from it.
  void attach(SSL_CTX* ctx) const;

  // Every certificate, in configuration order (index = tls.certificates index).
  const std::vector<key_pair>& certificates() const { return certs_; }

  // The entries (indexes) a handshake with this SNI gets; `named` is false when no entry names
  // it (the default entries are returned). For tests and the callback.
  const std::vector<std::size_t>& select(std::string_view sni, bool& named) const;

 private:
  static int on_client_hello(SSL* ssl, int* alert, void* arg);
  void build(const config::tls_options& t);  // the constructor's body
  void check_key_types(const config::tls_options& t, const std::vector<std::size_t>& entries,
                       const std::string& names) const;

  std::vector<key_pair> certs_;
  std::vector<config::source_location> where_;  // of each entry, for errors
  std::vector<STACK_OF(X509)*> chains_;         // intermediates of certs_[i], built once
  std::unordered_map<std::string, std::vector<std::size_t>> exact_;
  std::unordered_map<std::string, std::vector<std::size_t>> wildcard_;  // key: suffix after "*."
  std::vector<std::size_t> default_;
  bool strict_ = false;
};

}  // namespace mtlsd::tls
