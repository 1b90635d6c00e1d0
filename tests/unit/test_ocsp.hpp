#pragma once
// OCSP responses built with OpenSSL for unit tests, so that status, thisUpdate and nextUpdate
// can be anything (the integration tests' `openssl ocsp` responder always answers with
// thisUpdate = now).
#include <openssl/ocsp.h>

#include <ctime>
#include <string>

#include "test_pki.hpp"

namespace mtlsd::test {

// A successful DER response about `leaf`, signed by its issuer `ca`: `status` is one of
// V_OCSP_CERTSTATUS_GOOD / _REVOKED / _UNKNOWN; a revocation is keyCompromise, an hour before
// `this_update`. `next_update` 0 = none.
std::string ocsp_response(const credential& ca, const credential& leaf, int status,
                          std::time_t this_update, std::time_t next_update);

}  // namespace mtlsd::test
