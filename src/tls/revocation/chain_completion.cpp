#include "chain_completion.hpp"

#include <algorithm>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {
namespace {

// Longer chains than this are not built (verify_depth allows 4 by default).
constexpr std::size_t max_chain_completion = 8;
// Certificates kept per name: the keys of a CA's re-key, and a few cross-certificates.
constexpr std::size_t max_per_subject = 4;

}  // namespace

void known_issuers::learn(const cert_chain& chain) {
  for (std::size_t i = 1; i < chain.size(); ++i) {
    X509* ca = chain[i].get();
    const std::string name = name_der(X509_get_subject_name(ca));
    std::vector<x509_ptr> certs;
    if (auto* known = by_subject_.find(name)) {
      // The usual case, the same CA as last time: nothing to change (find made it recent).
      if (X509_cmp(known->front().get(), ca) == 0) continue;
      certs = std::move(*known);
    }
    auto same = std::find_if(certs.begin(), certs.end(),
                             [&](const x509_ptr& c) { return X509_cmp(c.get(), ca) == 0; });
    if (same != certs.end()) certs.erase(same);
    certs.insert(certs.begin(), up_ref(ca));
    if (certs.size() > max_per_subject) certs.resize(max_per_subject);
    by_subject_.put(name, std::move(certs));
  }
}

void known_issuers::complete(cert_chain& chain) {
  while (!chain.empty() && chain.size() < max_chain_completion) {
    X509* top = chain.back().get();
    if (X509_check_issued(top, top) == X509_V_OK) return;  // a self-issued root
    auto* known = by_subject_.find(name_der(X509_get_issuer_name(top)));
    if (!known) return;
    X509* issuer = nullptr;
    for (const auto& c : *known) {
      EVP_PKEY* key = X509_get0_pubkey(c.get());
      if (X509_check_issued(c.get(), top) == X509_V_OK && key && X509_verify(top, key) == 1) {
        issuer = c.get();
        break;
      }
      drain_errors();
    }
    if (!issuer) return;
    chain.push_back(up_ref(issuer));
  }
}

}  // namespace mtlsd::tls::revocation
