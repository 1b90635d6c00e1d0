#include "chain_completion.hpp"

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {
namespace {

// Longer chains than this are not built (verify_depth allows 4 by default).
constexpr std::size_t max_chain_completion = 8;

}  // namespace

void known_issuers::learn(const cert_chain& chain) {
  for (std::size_t i = 1; i < chain.size(); ++i)
    by_subject_.put(name_der(X509_get_subject_name(chain[i].get())), up_ref(chain[i].get()));
}

void known_issuers::complete(cert_chain& chain) {
  while (!chain.empty() && chain.size() < max_chain_completion) {
    X509* top = chain.back().get();
    if (X509_check_issued(top, top) == X509_V_OK) return;  // a self-issued root
    x509_ptr* found = by_subject_.find(name_der(X509_get_issuer_name(top)));
    if (!found || X509_check_issued(found->get(), top) != X509_V_OK) return;
    EVP_PKEY* key = X509_get0_pubkey(found->get());
    if (!key || X509_verify(top, key) != 1) {
      drain_errors();
      return;
    }
    chain.push_back(up_ref(found->get()));
  }
}

}  // namespace mtlsd::tls::revocation
