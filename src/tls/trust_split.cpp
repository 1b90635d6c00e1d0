// split_trust_bundle (tls/trust_store.hpp): which entries of a trust bundle are anchors.
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstddef>
#include <vector>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/trust_store.hpp"

namespace mtlsd::tls {
namespace {

bool self_issued(X509* c) {
  return X509_check_issued(c, c) == X509_V_OK;
}

// At most this many signature checks per certificate while looking for its issuer. A real bundle
// holds one or two candidates for a certificate (a CA rollover, a cross-signature); one crafted
// with many CAs of one name and key identifiers, which a federated partner or the Workload API
// could send, made a check for every pair on the control thread (review: 700 CAs took 30 s, and
// /healthz waited that long).
constexpr int max_issuer_signature_checks = 4;

// The entry of `bundle` that issued `c` (name, AKI/SKI, key usage, and the signature itself), or
// -1.
int issuer_in(const cert_chain& bundle, X509* c) {
  int checks = 0;
  for (std::size_t i = 0; i < bundle.size(); ++i) {
    X509* cand = bundle[i].get();
    if (cand == c || X509_cmp(cand, c) == 0) continue;
    if (X509_check_issued(cand, c) != X509_V_OK) continue;
    if (++checks > max_issuer_signature_checks) break;
    EVP_PKEY* key = X509_get0_pubkey(cand);
    if (key && X509_verify(c, key) == 1) return static_cast<int>(i);
  }
  drain_errors();
  return -1;
}

}  // namespace

trust_split split_trust_bundle(const cert_chain& bundle) {
  // Each entry's issuer in the bundle, looked up once: the walks below only follow these.
  const std::size_t n = bundle.size();
  std::vector<bool> self(n);
  std::vector<int> issuer(n, -1);
  for (std::size_t i = 0; i < n; ++i) {
    self[i] = self_issued(bundle[i].get());
    if (!self[i]) issuer[i] = issuer_in(bundle, bundle[i].get());
  }
  trust_split out;
  for (std::size_t i = 0; i < n; ++i) {
    bool demote = false;
    // Walk up through the bundle: demote only if the walk ends at an entry that stays an anchor
    // (a self-issued root, or one whose issuer is not in the bundle). A cycle of cross-signed
    // CAs with no way out keeps this entry an anchor rather than trust nothing.
    int at = self[i] ? -1 : issuer[i];
    for (std::size_t steps = 0; at >= 0 && steps <= n; ++steps) {
      const auto up = static_cast<std::size_t>(at);
      if (self[up] || issuer[up] < 0) {
        demote = true;
        break;
      }
      at = issuer[up];
    }
    (demote ? out.intermediates : out.anchors).push_back(up_ref(bundle[i].get()));
  }
  return out;
}

}  // namespace mtlsd::tls
