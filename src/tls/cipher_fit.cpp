#include "mtlsd/tls/cipher_fit.hpp"

#include <memory>
#include <optional>
#include <vector>

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

// TLS 1.3 suites say NID_kx_any (and NID_auth_any): the key exchange and signature are chosen
// apart from the suite. Every other cipher is a TLS 1.2 one.
bool tls12(const SSL_CIPHER* c) {
  return SSL_CIPHER_get_kx_nid(c) != NID_kx_any;
}

// The TLS 1.2 ciphers of `ctx`'s list, as written ("A:B:...", a few at most).
std::string listed_tls12(SSL_CTX* ctx) {
  const STACK_OF(SSL_CIPHER)* all = SSL_CTX_get_ciphers(ctx);
  std::string out;
  int shown = 0;
  for (int i = 0; i < sk_SSL_CIPHER_num(all); ++i) {
    const SSL_CIPHER* c = sk_SSL_CIPHER_value(all, i);
    if (!tls12(c)) continue;
    if (++shown > 4) return out + ":...";
    out += (out.empty() ? "" : ":") + std::string(SSL_CIPHER_get_name(c));
  }
  return out;
}

}  // namespace

std::vector<const SSL_CIPHER*> tls12_ciphers_offered(SSL_CTX* ctx) {
  std::vector<const SSL_CIPHER*> out;
  const std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx), &SSL_free);
  if (!ssl) return out;
  // What a handshake of this context could use: the list with the ciphers the security level,
  // the version range and the signature algorithms rule out taken away.
  STACK_OF(SSL_CIPHER)* offered = SSL_get1_supported_ciphers(ssl.get());
  for (int i = 0; i < sk_SSL_CIPHER_num(offered); ++i)
    if (const SSL_CIPHER* c = sk_SSL_CIPHER_value(offered, i); tls12(c)) out.push_back(c);
  sk_SSL_CIPHER_free(offered);
  return out;
}

std::string tls12_cipher_gap(SSL_CTX* ctx, X509* leaf) {
  const auto offered = tls12_ciphers_offered(ctx);
  // The list's names pass SSL_CTX_set_cipher_list, and the security level (2 at least:
  // apply_validation_policy) then drops NULL, export, DES and RC4 ciphers: `check` said valid
  // and every handshake failed (review).
  if (offered.empty())
    return "no TLS 1.2 cipher of '" + listed_tls12(ctx) + "' is allowed at security level " +
           std::to_string(SSL_CTX_get_security_level(ctx)) +
           " (each is weaker than 112 bits, or RC4, NULL or export)";
  EVP_PKEY* key = leaf ? X509_get0_pubkey(leaf) : nullptr;
  const auto kind = key ? kind_of(key) : std::nullopt;
  if (!kind) return {};
  for (const SSL_CIPHER* c : offered)
    if (SSL_CIPHER_get_auth_nid(c) == kind->auth_nid) return {};
  return std::string("no ") + kind->family + " cipher for the " + kind->key + " key of " +
         subject_of(leaf);
}

}  // namespace mtlsd::tls
