#pragma once
#include <ctime>

#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::runtime {

// Warnings (runtime::warnings) for listener `l`'s CRL files: an issuer none of whose CRLs is
// current at `now`, and under crl_scope: chain a CA of the trust bundle below its anchor whose
// issuer's CRL is not among them (nor OCSP or a distribution point to answer for it), with
// what follows for its peers under the listener's settings.
void crl_file_warnings(const listener_runtime& l, std::time_t now, config::diagnostics& out);

}  // namespace mtlsd::runtime
