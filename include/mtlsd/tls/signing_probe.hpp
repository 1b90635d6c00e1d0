#pragma once
// Whether a private key signs, asked with one signature over a fixed digest, and whether a
// failed handshake failed while signing with ours. A key in a token (PKCS#11) can stop signing
// while mtlsd runs: the token removed, the object deleted or replaced under the same name.
#include <openssl/ssl.h>

#include <string>

namespace mtlsd::tls {

// "" when `key` signs a SHA-256 digest (RSA with PSS, as handshakes ask it to; Ed25519/Ed448
// sign the message itself); otherwise what OpenSSL (and the token behind it) said.
std::string sign_probe(EVP_PKEY* key);

// True when the handshake on `ssl` failed while this side was writing the message it signs:
// CertificateVerify (TLS 1.3, or a client's), or a TLS 1.2 server's ServerKeyExchange. Nothing
// the peer sends is read in those states: the failure is our key's (or the token's).
bool failed_while_signing(const SSL* ssl);

// True when a completed handshake signed with our key the way sign_probe asks it to (RSA: with
// PSS): only then may it end a failure that probe would still find.
bool signed_as_probed(SSL* ssl);

}  // namespace mtlsd::tls
