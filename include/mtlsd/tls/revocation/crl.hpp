#pragma once
// CRLs fetched from distribution points (RFC 5280 §4.2.1.13), as pure functions: where to fetch,
// how to parse, who signed it, what it says about a certificate.
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls::revocation {

// The http:// URLs in `cert`'s CRL Distribution Points (full names only; LDAP and relative
// names are skipped).
std::vector<std::string> crl_urls(X509* cert);

// DER or PEM. Null when `data` holds no CRL. Decoded only: sort_revoked (tls/openssl.hpp) before
// it is shared between threads, and after its signature was checked (check_crl_issuer), so that
// a large CRL nobody signed costs no sort.
x509_crl_ptr parse_crl(std::string_view data);

// "" when `crl` was issued by `issuer` (same name, valid signature, cRLSign usage when the
// issuer restricts key usage) and is a complete CRL (not a delta); otherwise why not.
std::string check_crl_issuer(X509_CRL* crl, X509* issuer);

// "" when `crl` speaks for `cert`; otherwise why not (its Issuing Distribution Point limits it
// to CA or end-entity certificates, to some reasons, or to a distribution point `cert` does not
// name, or makes it indirect).
std::string check_crl_scope(X509_CRL* crl, X509* cert);

struct crl_entry_status {
  bool revoked = false;
  std::time_t revoked_at = 0;
  std::string reason;  // e.g. "keyCompromise"; empty when the CRL gives none
};
crl_entry_status lookup_crl(X509_CRL* crl, X509* cert);

std::time_t crl_this_update(const X509_CRL* crl);
std::time_t crl_next_update(const X509_CRL* crl);  // 0: none
std::string crl_issuer_text(const X509_CRL* crl);  // RFC 2253, for metrics and logs

// When a distribution point's CRL, downloaded at `now`, is downloaded again: a quarter of its
// validity ahead of its nextUpdate (at most `longest_lead` ahead), so that a point down for a
// while does not leave mtlsd without a current CRL; inside that window, no sooner than an eighth
// of it (at most a minute) after the last download, so that a point that publishes its next
// CRL only at nextUpdate is not asked every second; without nextUpdate, `longest_lead` later.
std::time_t crl_refresh_time(std::time_t this_update, std::time_t next_update, std::time_t now,
                             std::time_t longest_lead);

// The chain a full handshake would judge for a resumed session's `leaf` (chain_to_anchor).
struct rebuilt_chain {
  std::vector<X509*> below_anchor;  // the leaf first, then its issuers up to the anchor
  X509* anchor = nullptr;           // where it ends: a root or partial-chain CA; null if none
  // The issuer of below_anchor[depth]: the next certificate up, else the anchor (or null).
  X509* issuer_of(std::size_t depth) const {
    return depth + 1 < below_anchor.size() ? below_anchor[depth + 1] : anchor;
  }
  // below_anchor and the anchor: what a full handshake's verified chain holds.
  std::vector<X509*> with_anchor() const;
};

// For a resumed session, which skips verification: the crl_files check that refuses a full
// handshake once the CRL for a certificate of the chain is past nextUpdate + `grace_seconds`.
// (The files are in the session id context, so a new one resumes nothing; time is not.)
// `whole_chain`: crl_scope chain, every certificate below the anchor (else the leaf only). A
// certificate's CRLs are those named for its issuer whose authority key id matches that issuer,
// or a certificate further up the chain with the CRL issuer's name, as OpenSSL picks them (so
// after a CA re-key that kept its name, the other key's CRL does not stand in for a stale one);
// when the chain does not know the issuer, the name alone. A certificate with no complete CRL in
// `crls` is left as the full handshake left it; a CRL without nextUpdate is current, and a
// current delta keeps its issuer's expired base in force. (A CRL's scope, its issuing distribution
// point or onlyUser/onlyCA, is not weighed: narrower than OpenSSL's choice, which the full
// handshake made.) The refusal's detail (of the first such certificate, leaf side first),
// worded as a full handshake's, or "". `depths`, when given, gets bit d set for every such
// depth d (31 for any deeper).
std::string stale_crl_file(const std::vector<x509_crl_ptr>& crls, const rebuilt_chain& chain,
                           bool whole_chain, std::time_t grace_seconds, std::time_t now,
                           std::uint32_t* depths = nullptr);
// Whether any of `crls` is past nextUpdate + `grace_seconds`: nearly always false, and then no
// resumed chain needs rebuilding or checking.
bool any_crl_stale(const std::vector<x509_crl_ptr>& crls, std::time_t grace_seconds,
                   std::time_t now);

// The chain a full handshake would judge for `leaf`: the leaf, then each issuer found among
// `trust` (the trust bundle, which may hold intermediates; looked in first, as OpenSSL does) and
// `intermediates` (what a ticket or session carries, in any order, extra certificates ignored),
// up to the anchor: a self-issued root, or a CA of `trust` whose own issuer `trust` does not hold
// (partial chain). No certificate twice; at most 32 deep. Signatures are not checked again: the
// full handshake verified this chain.
rebuilt_chain chain_to_anchor(X509* leaf, const std::vector<X509*>& intermediates,
                              const cert_chain& trust);

// DER encodings used to match revocations against live sessions: the issuer name of a
// certificate or CRL, and serial numbers (content octets of the INTEGER).
std::string name_der(const X509_NAME* name);
std::string serial_der(const ASN1_INTEGER* serial);
// What a CRL of `der_bytes` holds in memory once OpenSSL has decoded it, for the cache's byte
// bound: about 8 times its DER (a 10 MiB CRL takes ~80 MiB, not 10).
std::size_t crl_memory_bytes(std::size_t der_bytes);
// Every serial a CRL revokes (removeFromCRL entries of deltas excluded), sorted.
std::vector<std::string> revoked_serials(X509_CRL* crl);

}  // namespace mtlsd::tls::revocation
