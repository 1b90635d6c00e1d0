#pragma once
// ASN.1 times (certificate validity, CRL and OCSP updates) as Unix time.
#include <openssl/asn1.h>

#include <ctime>

namespace mtlsd::tls {

// 0 when `t` is absent (e.g. a CRL without nextUpdate) or unparsable.
std::time_t asn1_time_to_unix(const ASN1_TIME* t);

}  // namespace mtlsd::tls
