#pragma once
#include <ctime>

#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::runtime {

// Warnings (runtime::warnings) for listener `l`'s CRL files: an issuer none of whose CRLs is
// current at `now`, with what follows for its peers under the listener's settings.
void crl_file_warnings(const listener_runtime& l, std::time_t now, config::diagnostics& out);

}  // namespace mtlsd::runtime
