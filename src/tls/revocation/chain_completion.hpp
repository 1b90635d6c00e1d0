#pragma once
// Chains for resumed sessions whose anchor could not be rebuilt (check_request::ends_at_anchor
// false: a trust anchor from the system store, a chain too long for its ticket). The CA
// certificates above them come from what the service learnt from verified chains (tickets never
// outlive the context that issued them, so a resumed peer's issuers were seen by a full
// handshake of this process, unless the bounded memory forgot them since).
#include <cstddef>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/cache.hpp"

namespace mtlsd::tls::revocation {

class known_issuers {
 public:
  explicit known_issuers(std::size_t max_entries) : by_subject_(max_entries, 0) {}

  // Remembers the CA certificates of a verified chain (leaf first).
  void learn(const cert_chain& chain);
  // Appends to `chain` the issuers it can prove (name and key identifier match, and a valid
  // signature), up to a self-issued root or the first issuer it does not know.
  void complete(cert_chain& chain);

 private:
  // DER subject name -> the certificates of that name, most recently seen first: a CA re-keyed
  // under the same name has one per key (review: one per name, so a full handshake of the other
  // key's clients made this one's resumed sessions 'issuer unknown').
  lru_cache<std::string, std::vector<x509_ptr>> by_subject_;
};

}  // namespace mtlsd::tls::revocation
