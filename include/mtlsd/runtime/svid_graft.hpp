#pragma once
// An X.509-SVID update applied to a listener's context as it was built, without reading the
// listener's files again: file reloads and SVID updates are independent (README, SPIFFE
// Workload API). What the SVID brings — our certificate chain and key, and the trust bundles
// when no CA files are named — comes from the update; what the files brought — the CA files'
// certificates, the CRL files' decodes, the verify parameters they set — is taken from the
// context built before. A CRL file that a file reload refused (damaged, gone) therefore cannot
// hold up a rotation, and an SVID update never makes live a file change that no successful
// file reload has.
#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/context.hpp"

namespace mtlsd::runtime {

// The context tls::build_context(l, &svid) would make were `l`'s files what they were when
// `built` (a context of `l`, with or without an SVID) was built. Throws config::config_error as
// build_context does when the SVID does not fit the listener.
tls::tls_context with_svid(const config::listener& l, const tls::tls_context& built,
                           const tls::svid_material& svid);

}  // namespace mtlsd::runtime
