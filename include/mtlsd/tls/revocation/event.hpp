#pragma once
// Revocations learnt while peers are connected (recheck_established): a fresh CRL or OCSP answer
// becomes an event; each worker matches it against the certificates its live sessions were
// admitted with and closes the revoked ones. Matching is by issuer name + serial number, which
// is what a CRL entry and an OCSP CertID name.
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls::revocation {

// One certificate of a live session's chain (DER issuer name, DER serial: see crl.hpp).
struct peer_cert_id {
  std::string issuer;
  std::string serial;
};

struct revocation_event {
  std::string issuer;                // DER of the issuer name
  std::vector<std::string> serials;  // sorted
  std::string listener;              // only this listener's sessions; "" = every listener
  std::string source;                // "ocsp http://...", "crl http://...", "crl file"
};

using event_ptr = std::shared_ptr<const revocation_event>;

std::vector<peer_cert_id> peer_cert_ids(const std::vector<X509*>& chain);

// The depth of the first certificate `e` revokes, or -1.
int revoked_depth(const revocation_event& e, const std::vector<peer_cert_id>& chain);

// Events for CRLs loaded from files (one per issuer, deltas merged with their base), to recheck
// `listener`'s sessions after a reload.
std::vector<event_ptr> events_from_crl_files(const std::vector<x509_crl_ptr>& crls,
                                             const std::string& listener);

}  // namespace mtlsd::tls::revocation
