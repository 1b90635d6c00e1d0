#pragma once
// What one revocation source said about one certificate, in the vocabulary of the
// `result` label of mtlsd_revocation_checks_total.
#include <string_view>

namespace mtlsd::tls::revocation {

enum class status {
  not_checked,  // this source does not apply (not configured, or not at this depth)
  good,
  revoked,
  unknown,      // OCSP: the responder does not know the certificate
  unavailable,  // no fresh, verifiable answer could be had
};

std::string_view to_string(status s);

// The `result` label index used by metrics::listener_metrics::revocation_checks
// (good=0 revoked=1 unknown=2 unavailable=3); not_checked has none.
int metric_index(status s);

// For combining answers into one per method: revoked > unavailable > unknown > good.
status worst(status a, status b);

}  // namespace mtlsd::tls::revocation
