#pragma once
// The one vocabulary for what a revocation source said about a certificate: the handshake's CRL
// checks (tls/verify), a stapled OCSP response, the revocation service (tls/revocation) and the
// `result` label of mtlsd_revocation_checks_total all speak it. Neutral, like reason.hpp, so that
// metrics stays a leaf and tls does not depend on tls/revocation.
#include <cstdint>
#include <string_view>

namespace mtlsd {

enum class revocation_status : std::uint8_t {
  not_checked,  // this source does not apply (not configured, or not at this depth)
  good,
  revoked,
  unknown,      // OCSP: the responder does not know the certificate
  unavailable,  // no fresh, verifiable answer could be had
};

// The `method` label of mtlsd_revocation_checks_total.
enum class revocation_method : std::uint8_t { crl, ocsp };

std::string_view to_string(revocation_status s);
std::string_view to_string(revocation_method m);

// For combining answers into one per method: revoked > unavailable > unknown > good.
revocation_status worst(revocation_status a, revocation_status b);

}  // namespace mtlsd
