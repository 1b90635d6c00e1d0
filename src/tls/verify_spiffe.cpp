// The verifier's SPIFFE side (tls.spiffe): which trust domain's bundle vouches for a peer, and
// the digest of the anchors and their trust domains that binds sessions to them.
#include <openssl/evp.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

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
  // "spiffe://" then the trust domain, up to the path (a workload's ID always has one).
  const std::string_view rest = std::string_view(id.spiffe_id).substr(9);
  const std::string_view td = rest.substr(0, rest.find('/'));
  // Any CA of the chain above the leaf will do, not only its top: go-spiffe's roots are the
  // bundle's certificates, each an anchor wherever it stands, and one store holding every
  // bundle may build the chain past it (a bundle's CA issued by another bundle's).
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

}  // namespace mtlsd::tls
