#pragma once
// Whether a certificate's key can serve TLS 1.2 under a context's cipher list. A TLS 1.2 cipher
// names the kind of key that signs the handshake (ECDHE-ECDSA-*, ECDHE-RSA-*): an ECDSA key under
// a list of RSA ciphers alone loads fine and then fails every TLS 1.2 handshake ("no shared
// cipher"). With TLS 1.3 allowed that is a TLS 1.2 problem only; with max_version "1.2" it is
// every handshake, which `check` should say rather than the first client.
#include <openssl/ssl.h>

#include <string>

namespace mtlsd::tls {

// "" when some TLS 1.2 cipher of `ctx` can be signed for with `leaf`'s key (or the key is of a
// kind this does not judge); otherwise what is missing, e.g. "no ECDHE-ECDSA cipher for the
// ECDSA key of CN=api".
std::string tls12_cipher_gap(SSL_CTX* ctx, X509* leaf);

}  // namespace mtlsd::tls
