#pragma once
// Builds a listener's SSL_CTX from its configuration: protocol floor, ciphers, our certificate,
// the trust store and the verifier. Built once per runtime and shared by every worker — never
// per connection: building a context (parsing certificates, loading stores) costs far more than
// the handshake's cryptography.
#include <memory>
#include <string>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/certificate_selection.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/session_cache.hpp"
#include "mtlsd/tls/trust_store.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {

inline constexpr const char* default_tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr const char* default_tls13_suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
inline constexpr const char* default_groups = "X25519:P-256:P-384";

struct tls_context {
  // Declared before ctx so that it is destroyed after it: the context points at the verifier.
  std::unique_ptr<verifier> peer_verifier;
  std::unique_ptr<const std::string> alpn_wire;  // server: our ALPN list, read by the callback
  // Client mode with session_resumption: the sessions the context's callback stores (shared by
  // every worker of this runtime). Declared before ctx for the same reason as the verifier.
  std::unique_ptr<client_session_cache> sessions;
  // tls.certificates: picks the certificate per handshake (the context's callback points at it).
  std::unique_ptr<certificate_selector> selector;
  ssl_ctx_ptr ctx;
  cert_chain own_chain;  // our certificate chain, leaf first (empty for a client without a cert)
  // Every chain we serve, in order: own_chain alone, or one per tls.certificates entry (then
  // own_chain is the first entry's). Expiry metrics, warnings and `check` walk all of them.
  std::vector<cert_chain> own_chains;
  std::vector<std::string> own_uri_sans;  // URI SANs of our leaf (X-Forwarded-Client-Cert's By=)
  cert_chain trust;  // CA certificates of the trust store (empty = system store)
  // With SPIFFE bundles, `trust` by trust domain: a peer's chain is built to its own domain's.
  bundles_by_domain trust_by_domain;
  // What a chain of `leaf` is built to: its trust domain's bundle, or else `trust`.
  const cert_chain& trust_for(X509* leaf) const;
  // Server mode: what the distinct names of `trust` take in a CertificateRequest; past
  // max_ca_names_bytes none is sent (tls/context.cpp, advertise_ca_names).
  std::size_t ca_names_bytes = 0;
  std::vector<x509_crl_ptr> crls;                          // CRLs loaded from revocation.crl_files
  std::vector<std::shared_ptr<const crl_file>> crl_files;  // their decodes, kept shared
  std::string server_name;  // client mode: the name checked and sent as SNI ("" for an IP)
};

// An X.509-SVID as a context uses it: our identity, certificate chain and key, and the CAs the
// listener trusts (its trust domains' bundles, already chosen). The runtime makes it from the
// Workload API's update (tls/spiffe), so this folder does not depend on that one.
struct svid_material {
  std::string spiffe_id;
  const key_pair* svid = nullptr;      // leaf first, then intermediates
  std::vector<spiffe_anchor> anchors;  // the trusted bundles' CAs, each with its trust domain
};

// The CA names a CertificateRequest may carry: its list has a 2-byte length, and the request's
// other fields (signature algorithms) need room too.
inline constexpr std::size_t max_ca_names_bytes = 60 * 1024;

// Throws config::config_error naming the configuration line of whatever failed. With tls.spiffe,
// `svid` is the latest X.509-SVID and bundles from the Workload API, or null before the first:
// then the context has no certificate and trusts nothing.
tls_context build_context(const config::listener& l, const svid_material* svid = nullptr);

// Whether client_auth `ca` refuses a client that sends no certificate (no_client_cert): under
// require, and under optional with an allow list: a client is admitted then only when an entry
// matches, and none can match a client without a certificate (the list is evaluated on the
// leaf, in the verify callback, which never runs then). The handshake's verify mode says it
// (build_context), and so does a reload judging an open connection (session_control).
inline bool client_certificate_required(const config::client_auth_options& ca) {
  return ca.mode == config::client_auth_mode::require ||
         (ca.mode == config::client_auth_mode::optional && !ca.allow.empty());
}

// True for "127.0.0.1" or "::1" (no brackets), false for host names.
bool is_ip_literal(const std::string& host);

}  // namespace mtlsd::tls
