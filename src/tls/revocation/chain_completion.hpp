#pragma once
// Chains for resumed sessions. A resumed session presents only its leaf; the CA certificates
// above it come from what the service learnt from verified chains (tickets never outlive the
// context that issued them, so a resumed peer's issuer was seen by a full handshake of this
// process, unless the bounded memory forgot it since).
#include <cstddef>
#include <string>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/cache.hpp"

namespace mtlsd::tls::revocation {

class known_issuers {
 public:
  explicit known_issuers(std::size_t max_entries) : by_subject_(max_entries, 0) {}

  // Remembers the CA certificates of a verified chain (leaf first).
  void learn(const cert_chain& chain);
  // Appends to `chain` the issuers it can prove (name match and a valid signature), up to a
  // self-issued root or the first issuer it does not know.
  void complete(cert_chain& chain);

 private:
  lru_cache<std::string, x509_ptr> by_subject_;  // DER subject name -> certificate
};

}  // namespace mtlsd::tls::revocation
