#pragma once
// Whether a certificate's key can serve TLS 1.2 under a context's cipher list. A TLS 1.2 cipher
// names the kind of key that signs the handshake (ECDHE-ECDSA-*, ECDHE-RSA-*): an ECDSA key under
// a list of RSA ciphers alone loads fine and then fails every TLS 1.2 handshake ("no shared
// cipher"). So does a list whose every cipher the security level refuses (ECDHE-ECDSA-NULL-SHA:
// its name is accepted, the cipher is never offered). With TLS 1.3 allowed that is a TLS 1.2
// problem only; with max_version "1.2" it is every handshake, which `check` should say rather
// than the first client.
#include <openssl/ssl.h>

#include <string>
#include <vector>

namespace mtlsd::tls {

// The TLS 1.2 ciphers a handshake of `ctx` could use, in its order: its list less what the
// security level, version range and signature algorithms set on `ctx` rule out (asked of a
// throwaway SSL of it, SSL_get1_supported_ciphers).
std::vector<const SSL_CIPHER*> tls12_ciphers_offered(SSL_CTX* ctx);

// "" when some TLS 1.2 cipher `ctx` offers can be signed for with `leaf`'s key (or the key is of
// a kind this does not judge); otherwise what is missing, e.g. "no ECDHE-ECDSA cipher for the
// ECDSA key of CN=api", or that the security level leaves no TLS 1.2 cipher at all.
std::string tls12_cipher_gap(SSL_CTX* ctx, X509* leaf);

}  // namespace mtlsd::tls
