#include "mtlsd/tls/cipher_fit.hpp"

#include <optional>

#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::tls {
namespace {

struct key_kind {
  int auth_nid;        // what a TLS 1.2 cipher's authentication must be to sign with it
  const char* key;     // how the operator knows the key
  const char* family;  // the cipher names that would fit
};

// RSA-PSS keys sign ECDHE-RSA handshakes; Ed25519 and Ed448 sign ECDHE-ECDSA ones (RFC 8422).
std::optional<key_kind> kind_of(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      return key_kind{NID_auth_rsa, "RSA", "ECDHE-RSA"};
    case EVP_PKEY_EC:
      return key_kind{NID_auth_ecdsa, "ECDSA", "ECDHE-ECDSA"};
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
      return key_kind{NID_auth_ecdsa, "EdDSA", "ECDHE-ECDSA"};
    default:
      return std::nullopt;
  }
}

}  // namespace

std::string tls12_cipher_gap(SSL_CTX* ctx, X509* leaf) {
  EVP_PKEY* key = X509_get0_pubkey(leaf);
  const auto kind = key ? kind_of(key) : std::nullopt;
  if (!kind) return {};
  const STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(ctx);
  // TLS 1.3 suites say NID_auth_any (the signature is chosen apart from the suite): only TLS 1.2
  // ciphers name a key kind.
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i)
    if (SSL_CIPHER_get_auth_nid(sk_SSL_CIPHER_value(ciphers, i)) == kind->auth_nid) return {};
  return std::string("no ") + kind->family + " cipher for the " + kind->key + " key of " +
         subject_of(leaf);
}

}  // namespace mtlsd::tls
