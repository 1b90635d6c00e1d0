#pragma once
// ASN.1 times (certificate validity, CRL and OCSP updates) as Unix time.
#include <openssl/asn1.h>

#include <ctime>

namespace mtlsd::tls {

// 0 when `t` is absent (e.g. a CRL without nextUpdate) or unparsable.
std::time_t asn1_time_to_unix(const ASN1_TIME* t);

// Clock skew tolerated on a CRL's or an OCSP answer's thisUpdate/nextUpdate: an issuer's or a
// responder's clock drifts from ours (review: a fresh CRL file was unusable until our clock
// caught up). RFC 5280 and RFC 6960 leave the amount to the relying party; 5 minutes is what
// OpenSSL's own tools allow (`openssl ocsp`'s default -validity_period). Here, in tls, so that
// the handshake's CRL check (tls/verify.cpp) shares it with tls/revocation's fetched CRLs and
// OCSP answers and with the CRL file warnings.
inline constexpr std::time_t revocation_skew_seconds = 300;

}  // namespace mtlsd::tls
