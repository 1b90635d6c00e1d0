#pragma once
// Peer verification shared by live handshakes and `mtlsd verify`: one decision function, run
// from OpenSSL's verify callback, so that a refused peer gets a TLS alert (not a TCP reset) and
// `mtlsd verify` cannot disagree with what a handshake would do.
#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/reason.hpp"
#include "mtlsd/revocation_status.hpp"
#include "mtlsd/tls/identity.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/peer_policy.hpp"

namespace mtlsd::tls {

// What verification concluded about one peer. Filled by the verify callback.
struct verify_outcome {
  // Input, set before verification: where the peer connects from, for allow rules on
  // source_cidrs (null: unknown, e.g. a unix socket). Must outlive the handshake.
  const config::ip_address* source = nullptr;
  // The server name allow rules judge. verify_offline: its input. A server-side handshake: the
  // client's SNI as the ClientHello callback read it (client_sni: lower case, no final dot;
  // see record_client_sni). A client-side handshake reads the name it sends from its SSL.
  std::string sni;
  // A server-side handshake with tls.certificates: how many ClientHellos the certificate
  // selector has judged (a HelloRetryRequest brings a second, which must name the same server).
  unsigned client_hellos = 0;

  std::optional<reason> refusal;
  std::string detail;
  std::optional<peer_identity> identity;  // set once the leaf passed every check
  // The leaf of a refused peer, for the access log (what was refused, not an identity).
  std::optional<peer_identity> refused_peer;
  // The connection's id in logs, for debug lines written from callbacks (ClientHello).
  std::uint64_t conn_id = 0;
  policy_match match;  // with identity: what in `allow` admitted the peer
  // What the CRL files concluded (never `unknown`), for mtlsd_revocation_checks_total.
  revocation_status crl = revocation_status::not_checked;
  std::string crl_note;  // e.g. which level had no CRL under on_unavailable: allow
  // With OCSP or distribution points configured, a depth whose CRL file is missing or stale is
  // not decided in the handshake: bit d is set and the revocation service decides (another
  // source may answer for that certificate).
  std::uint32_t crl_deferred_depths = 0;
  // Every depth whose CRL file was missing or stale and that was let through (deferred as
  // above, or admitted under on_unavailable: allow): a ticket carries it (ticket_chain.hpp).
  std::uint32_t crl_unusable_depths = 0;
  // Client mode: what a stapled OCSP response from the remote said (not_checked: none sent).
  // Its details go into the refusal it causes (stapling.cpp); a good one is `stapled ocsp`.
  revocation_status staple = revocation_status::not_checked;
  cert_chain chain;  // verify_offline only: the verified chain, leaf first
};

// tls.spiffe with the Workload API's bundles as the trust: a trusted CA and the trust domain
// whose bundle holds it. A bundle vouches for its own trust domain's SPIFFE IDs only.
struct spiffe_anchor {
  std::string trust_domain;
  x509_ptr cert;
};

// How CRL problems are treated (revocation.on_unavailable / crl_grace).
struct crl_policy {
  bool enabled = false;
  bool soft_fail = false;          // on_unavailable: allow
  long grace_seconds = 0;          // keep enforcing a CRL this long past its nextUpdate
  bool defer_unavailable = false;  // OCSP/CDP configured: see verify_outcome::crl_deferred_depths
};

// The policy once a listener's CRL files are in its store (tls::build_context, and an SVID
// update grafted onto that build: runtime/svid_graft.cpp).
inline crl_policy crl_policy_with_files(const config::revocation_options& rv) {
  crl_policy p;
  p.enabled = true;
  p.soft_fail = rv.on_unavailable == config::unavailable_policy::allow;
  p.grace_seconds =
      static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(rv.crl_grace).count());
  p.defer_unavailable = rv.ocsp != config::ocsp_mode::off || rv.crl_distribution_points;
  return p;
}

// Maps an X509_V_ERR_* code onto the rejection vocabulary.
reason reason_from_x509_error(int err);

// The detail of a host name or IP address mismatch (X509_V_ERR_HOSTNAME_MISMATCH,
// X509_V_ERR_IP_ADDRESS_MISMATCH) of the leaf `store_ctx` verifies, in place of OpenSSL's
// "hostname mismatch (depth 0: SUBJECT)", whose subject is empty in every certificate
// cert-manager issues for a SPIFFE ID (review): the name expected and the DNS, IP and URI names
// the certificate has, long ones abbreviated ("hostname mismatch: expected orders.shop.svc;
// certificate has URI:spiffe://cluster.local/ns/shop/sa/orders, DNS:orders"). "" for any other
// error.
std::string name_mismatch_detail(X509_STORE_CTX* store_ctx, int err);

// What a listener's TLS can sign with, worked out once when its context is built: the TLS
// versions it allows and, for TLS 1.2's ECDSA, the NIDs of its groups (tls.curves, or
// default_groups), as written in `groups`.
struct tls_signers {
  bool tls12 = true;
  bool tls13 = true;
  std::vector<int> group_nids;
  std::string groups;
};
// From the context's min/max protocol versions and its groups list.
tls_signers signers_of(int min_version, int max_version, const std::string& groups);

// Why `leaf`'s key signs with no TLS version `s` allows, or "" when one does. TLS 1.3: RSA,
// RSA-PSS, Ed25519, Ed448, ECDSA on P-256, P-384, P-521. TLS 1.2: those, DSA, and ECDSA on any
// curve among the groups (OpenSSL's check: the key's curve is among our groups). The verify
// callback refuses such a leaf (bad_certificate) in both modes; check refuses such a key of ours.
std::string tls_key_problem(X509* leaf, const tls_signers& s);

// Why a handshake failed when the verify callback recorded nothing, from the SSL_R_* reason of
// the error that ended it (a forged CertificateVerify is bad_signature); nullopt when it is no
// matter of certificates (then protocol_error).
std::optional<reason> reason_from_ssl_failure(int ssl_reason);

// The validation rules every context that verifies a peer gets, in both modes: strict RFC 5280
// checks, every trust-bundle certificate an anchor, security level 2 or above.
void apply_validation_policy(SSL_CTX* ctx);

enum class peer_role { client, server };  // which side the verified peer is

class verifier {
 public:
  verifier(peer_role role, config::allow_list allow, crl_policy crl = {}, tls_signers signers = {});

  // Installs the callback on `ctx` and points the context at this verifier, which must outlive
  // the context and every SSL made from it.
  void attach(SSL_CTX* ctx) const;
  // Per connection: where the callback writes its conclusion. `out` must outlive the handshake.
  static void bind(SSL* ssl, verify_outcome* out);
  // The outcome bound to `ssl`, or null (for callbacks that run later in the handshake).
  static verify_outcome* outcome_of(SSL* ssl);

  // `mtlsd verify` and the re-judging of live connections after a reload: verifies `leaf` (+
  // `untrusted` intermediates) exactly as a handshake on `ctx` would — same store, parameters,
  // purpose, depth, callback, allow rules — optionally at time `at`, for a peer connecting from
  // `peer.source` with SNI `peer.sni`. `names_of`, when set (a client-mode connection re-judged):
  // the remote's host name or IP address is checked against the one that connection's handshake
  // checked (its SSL's), not the context's: a reload that changed server_name names another
  // remote, not the one the connection reached.
  verify_outcome verify_offline(SSL_CTX* ctx, X509* leaf, STACK_OF(X509) * untrusted,
                                std::optional<std::time_t> at, const peer_context& peer = {},
                                SSL* names_of = nullptr) const;

  const config::allow_list& allow() const { return allow_; }

  // The trust is SPIFFE bundles (tls.spiffe without CA files): a peer is verified only when its
  // chain reaches a CA of the bundle of its own SPIFFE ID's trust domain, as go-spiffe verifies
  // against that bundle alone. Otherwise a federated trust domain's CA could issue our own
  // trust domain's IDs, and every bundle's CA any certificate without a SPIFFE ID at all.
  void bind_trust_domains(std::vector<spiffe_anchor> anchors) { anchors_ = std::move(anchors); }
  // What bind_trust_domains bound, as bytes for the session id context ("" when nothing):
  // each anchor's trust domain and SHA-256, sorted.
  std::string trust_binding() const;

  peer_role role() const { return role_; }
  const tls_signers& signers() const { return signers_; }

 private:
  static int callback(int ok, X509_STORE_CTX* store_ctx);
  int decide(int ok, X509_STORE_CTX* store_ctx, verify_outcome& out, std::string_view sni) const;
  // decide() for a certificate OpenSSL found fault with: 1 to accept the error after all.
  int decide_error(X509_STORE_CTX* store_ctx, verify_outcome& out) const;
  bool within_grace(X509_STORE_CTX* store_ctx) const;
  // With bind_trust_domains: why `id` is no X.509-SVID (its URI SANs) or its verified chain
  // does not end in its trust domain's bundle, or "" when neither.
  std::string outside_trust_domain(X509_STORE_CTX* store_ctx, const peer_identity& id) const;
  // With bind_trust_domains, for a chain that found no issuer (`err`): that the leaf's trust
  // domain's bundle holds none of it, or "" when that is not the case.
  std::string unreached_bundle(X509_STORE_CTX* store_ctx, int err) const;

  peer_role role_;
  config::allow_list allow_;
  crl_policy crl_;
  tls_signers signers_;  // for tls_key_problem
  std::vector<spiffe_anchor> anchors_;
};

}  // namespace mtlsd::tls
