// The verifier's SPIFFE side (tls.spiffe): which trust domain's bundle vouches for a peer, and
// the digest of the anchors and their trust domains that binds sessions to them.
#include <openssl/evp.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {

std::string verifier::trust_binding() const {
  std::vector<std::string> entries;
  for (const auto& a : anchors_) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    X509_digest(a.cert.get(), EVP_sha256(), d, &len);
    entries.push_back(a.trust_domain + '\0' + std::string(reinterpret_cast<char*>(d), len));
  }
  std::sort(entries.begin(), entries.end());
  std::string out;
  for (const auto& e : entries)
    out += e + '\n';
  return out;
}

std::string verifier::outside_trust_domain(X509_STORE_CTX* store_ctx,
                                           const peer_identity& id) const {
  if (anchors_.empty()) return {};
  if (id.spiffe_id.empty())
    return "no SPIFFE ID" +
           (id.spiffe_id_problem.empty() ? std::string() : " (" + id.spiffe_id_problem + ")") +
           ": a SPIFFE bundle vouches only for the SPIFFE IDs of its trust domain";
  // An X.509-SVID carries exactly one URI SAN, its SPIFFE ID (X509-SVID section 4.1; go-spiffe
  // refuses others): what a bundle vouches for is that ID, not another URI an allow list or an
  // upstream reading XFCC could match.
  if (id.uri_sans.size() != 1)
    return "not an X.509-SVID: the certificate has " + std::to_string(id.uri_sans.size()) +
           " URI SANs; a SPIFFE bundle vouches only for X.509-SVIDs, which have exactly one";
  const std::string_view td = spiffe_trust_domain(id.spiffe_id);
  // A chain is built to the anchors of the leaf's trust domain (trust_store.hpp), which holds
  // when that domain has a bundle here; otherwise it was built against every bundle, and this
  // says which ones it reached. Any CA of the chain above the leaf counts, not only its top
  // (go-spiffe's roots are the bundle's certificates, each an anchor wherever it stands).
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
  std::string holders;  // the trust domains whose bundles hold a CA of the chain
  for (int i = 1; chain && i < sk_X509_num(chain); ++i) {
    X509* ca = sk_X509_value(chain, i);
    for (const auto& a : anchors_) {
      if (X509_cmp(a.cert.get(), ca) != 0) continue;
      if (a.trust_domain == td) return {};
      if (holders.find(a.trust_domain) == std::string::npos)
        holders += (holders.empty() ? "" : ", ") + a.trust_domain;
    }
  }
  return "the chain reaches CAs of the bundle of " +
         (holders.empty() ? std::string("no trust domain") : holders) + " only, not of " +
         std::string(td) + ", the trust domain of " + id.spiffe_id;
}

std::string verifier::unreached_bundle(X509_STORE_CTX* store_ctx, int err) const {
  if (anchors_.empty() || (err != X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY &&
                           err != X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT))
    return {};
  const peer_identity id = extract_identity(X509_STORE_CTX_get0_cert(store_ctx));
  const std::string_view td = spiffe_trust_domain(id.spiffe_id);
  if (td.empty() || std::none_of(anchors_.begin(), anchors_.end(),
                                 [&](const spiffe_anchor& a) { return a.trust_domain == td; }))
    return {};
  // Chains are built to the anchors of the leaf's trust domain only (trust_store.hpp).
  X509* cert = X509_STORE_CTX_get_current_cert(store_ctx);
  return "the chain reaches no CA of the bundle of " + std::string(td) + ", the trust domain of " +
         id.spiffe_id + " (a bundle vouches for its own trust " +
         "domain's IDs only): its issuer " + (cert ? issuer_of(cert) : std::string("?")) +
         " is none of them";
}

}  // namespace mtlsd::tls
