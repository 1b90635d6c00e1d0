#pragma once
// The revocation service's outcomes as log lines and metrics: the service returns what happened
// (tls/revocation/outcome.hpp); its owner (the daemon, `mtlsd verify`) says it here.
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/tls/revocation/outcome.hpp"

namespace mtlsd::daemon {

// Logs `o` and updates the CRL gauges in `metrics` (may be null: `mtlsd verify`).
void report_revocation(const tls::revocation::outcome& o, metrics::registry* metrics);

}  // namespace mtlsd::daemon
