#pragma once
// What one revocation source said about one certificate. The enum itself is the neutral
// mtlsd::revocation_status (revocation_status.hpp), shared with the handshake's CRL checks and
// the metrics; this folder calls it `status` for short.
#include "mtlsd/revocation_status.hpp"

namespace mtlsd::tls::revocation {

using status = revocation_status;

}  // namespace mtlsd::tls::revocation
