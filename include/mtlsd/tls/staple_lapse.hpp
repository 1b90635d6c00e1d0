#pragma once
// Client mode: when the verified "good" OCSP staple a full handshake accepted for the remote's
// leaf lapses, kept on that leaf (the certificate as that handshake parsed it, that connection's
// alone). Set by the staple check (tls/revocation/stapling.cpp); read by the client session
// cache, which resumes nothing past it (session_cache.cpp), and by the revocation service, which
// with recheck_established asks the responder again then (service.cpp).
#include <openssl/x509.h>

#include <ctime>

namespace mtlsd::tls {

void set_stapled_good_until(X509* leaf, std::time_t until);
// The lapse set for `leaf`; 0 when it stapled nothing good.
std::time_t stapled_good_until(X509* leaf);

}  // namespace mtlsd::tls
