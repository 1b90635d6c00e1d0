#pragma once
// What a context trusts and how peers' chains are built to it: the X509_STORE holds the anchors
// (and the CRLs), a pool beside it the trust bundles' intermediates; with SPIFFE bundles, each
// trust domain's anchors are also kept apart, and a peer's chain is built to those of its own
// SPIFFE ID's trust domain only.
#include <openssl/ssl.h>

#include <map>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {

// A trust bundle split into anchors and intermediates. An entry that is not self-issued and
// whose issuer is also in the bundle (name, AKI/SKI and signature checked) is NOT an anchor:
// were it one, X509_V_FLAG_PARTIAL_CHAIN would stop chain building there and drop every
// restriction of the CA above it (name constraints, its CRL revoking the intermediate, EKU,
// pathLen). Such entries only help build chains. An entry whose issuer is not in the bundle
// stays an anchor ("trust exactly this issuing CA").
struct trust_split {
  cert_chain anchors;
  cert_chain intermediates;
};
trust_split split_trust_bundle(const cert_chain& bundle);

// CA files: `cas` split (split_trust_bundle), the anchors into a new store for `ctx`, the
// intermediates into its pool. Returns `cas` (for metrics).
cert_chain install_trust_store(SSL_CTX* ctx, cert_chain cas);

// SPIFFE bundles, by trust domain.
using bundles_by_domain = std::map<std::string, cert_chain, std::less<>>;
bundles_by_domain group_by_domain(const std::vector<spiffe_anchor>& anchors);

// SPIFFE bundles: each trust domain's bundle split on its own, so that one bundle's CA cannot
// demote another's; the anchors go into a new store and, with the intermediates, per trust
// domain beside it. A chain is then built from the anchors and intermediates of its leaf's
// trust domain only, as go-spiffe verifies an SVID against that bundle alone: a partner's CA
// with another trust domain's CA's name and key identifier is never a candidate for the issuer
// OpenSSL looks up (by name and key identifier, not signature). A leaf with no SPIFFE ID, or one
// of a trust domain without a bundle here, is built against every bundle (and refused
// afterwards: verifier::bind_trust_domains). Returns every bundle certificate (for metrics).
cert_chain install_bundle_trust(SSL_CTX* ctx, const bundles_by_domain& bundles);

// For a verification outside a handshake (verifier::verify_offline), what the handshake's
// callback does: the untrusted certificates chain building for `leaf` may use, `peer`'s then the
// intermediates of the trust bundles (a new stack without references of its own: free it with
// sk_X509_free; null when out of memory), ...
STACK_OF(X509) * with_intermediates(SSL_CTX* ctx, X509* leaf, STACK_OF(X509) * peer);
// ... and, after X509_STORE_CTX_init, the anchors of the leaf's trust domain (SPIFFE bundles).
void confine_to_trust_domain(SSL_CTX* ctx, X509_STORE_CTX* store_ctx);

}  // namespace mtlsd::tls
