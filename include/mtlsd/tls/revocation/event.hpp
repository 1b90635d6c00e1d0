#pragma once
// Revocations learnt while peers are connected (recheck_established): a fresh CRL or OCSP answer
// becomes an event; each worker matches it against the certificates its live sessions were
// admitted with and closes the revoked ones. Matching is by issuer name, issuer key and serial
// number: a CRL entry and an OCSP CertID name a serial of one CA, and a name alone does not say
// which CA (review: another CA with the same name, or a CA re-keyed under its name, had its
// certificates with the same serials closed).
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls::revocation {

// SHA-256 of a CA's subjectPublicKey (the BIT STRING's contents, which OCSP's issuerKeyHash
// hashes with SHA-1): which key signed a certificate, a CRL or the subject of an OCSP answer.
// All zero: not known.
using key_hash = std::array<unsigned char, 32>;
key_hash key_hash_of(X509* ca);

// One certificate of a live session's chain (DER issuer name, DER serial: see crl.hpp).
struct peer_cert_id {
  std::string issuer;
  key_hash issuer_key{};  // the key of the next certificate up; zero above the anchor
  std::string serial;
};

struct revocation_event {
  std::string issuer;  // DER of the issuer name
  // The key that signed the CRL, or of the issuer in the OCSP answer's CertID. Zero only for a
  // CRL file none of the listener's trusted CAs signed (an intermediate its peers send): then
  // the name alone, which closes on the safe side.
  key_hash issuer_key{};
  std::vector<std::string> serials;  // sorted
  std::string listener;              // only this listener's sessions; "" = every listener
  std::string source;                // "ocsp http://...", "crl http://...", "crl file"
};

using event_ptr = std::shared_ptr<const revocation_event>;

// The ids of a verified chain, leaf first, up to its anchor: each certificate's issuer is the
// next one, the anchor's is itself when it is self-signed and otherwise not known (nothing above
// an anchor is checked in a handshake either). Costs a SHA-256 of each CA's key, once per
// handshake with recheck_established (0.5 us for an EC P-256 key, 0.7 us for RSA-2048 on the
// 2-core test machine; a chain of leaf, intermediate and root: two), and 32 bytes per certificate
// held while connected (no allocation).
std::vector<peer_cert_id> peer_cert_ids(const std::vector<X509*>& chain);

// The depth of the first certificate `e` revokes, or -1.
int revoked_depth(const revocation_event& e, const std::vector<peer_cert_id>& chain);

// Whether `crl` is indirect (its Issuing Distribution Point says so): its entries may be other
// CAs' certificates, whose keys it does not name. Neither the handshake (OpenSSL without
// extended CRL support) nor a distribution point's check (check_crl_scope) uses one, so no event
// comes of it either.
bool indirect_crl(X509_CRL* crl);

// Events for CRLs loaded from files (one per issuer and key, deltas merged with their base), to
// recheck `listener`'s sessions after a reload. A CRL's key is that of the CA among `cas` (the
// listener's trusted CAs) with its issuer's name whose key verifies its signature: one
// signature check per CRL and same-named CA, at a reload that changed the files.
std::vector<event_ptr> events_from_crl_files(const std::vector<x509_crl_ptr>& crls,
                                             const std::vector<X509*>& cas,
                                             const std::string& listener);

}  // namespace mtlsd::tls::revocation
