#include "mtlsd/tls/signing_probe.hpp"

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

namespace {

// One signature over a fixed message: SHA-256 (none for Ed25519/Ed448, which hash themselves),
// RSA with `padding`. True when the key signed.
bool signs(EVP_PKEY* key, int padding) {
  static constexpr unsigned char message[] = "mtlsd: can this key sign?";
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_PKEY_CTX* pctx = nullptr;  // owned by `md`
  const int type = EVP_PKEY_get_base_id(key);
  const EVP_MD* digest =
      type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
  std::size_t len = 0;
  bool ok = md && EVP_DigestSignInit(md.get(), &pctx, digest, nullptr, key) == 1;
  if (ok && type == EVP_PKEY_RSA) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, padding) == 1;
    if (ok && padding == RSA_PKCS1_PSS_PADDING)
      ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  }
  ok = ok && EVP_DigestSign(md.get(), nullptr, &len, message, sizeof message) == 1;
  std::vector<unsigned char> sig(len);
  return ok && EVP_DigestSign(md.get(), sig.data(), &len, message, sizeof message) == 1;
}

}  // namespace

std::string sign_probe(EVP_PKEY* key) {
  if (!key) return "no private key";
  // RSA with PSS, as every TLS 1.3 handshake signs, and TLS 1.2 too when the client lists it
  // first (OpenSSL, Go and browsers do): a token that signs only PKCS#1 v1.5 would fail nearly
  // every handshake, so it does not pass.
  if (signs(key, RSA_PKCS1_PSS_PADDING)) return {};
  std::string why = drain_errors();
  return why.empty() ? "the signature failed" : why;
}

bool failed_while_signing(const SSL* ssl) {
  switch (SSL_get_state(ssl)) {
    case TLS_ST_SW_CERT_VRFY:
    case TLS_ST_SW_KEY_EXCH:
    case TLS_ST_CW_CERT_VRFY:
      return true;
    default:
      return false;
  }
}

bool signed_as_probed(SSL* ssl) {
  EVP_PKEY* key = SSL_get_privatekey(ssl);
  if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) return key != nullptr;
  int nid = NID_undef;
  return SSL_get_signature_type_nid(ssl, &nid) == 1 && nid == EVP_PKEY_RSA_PSS;
}

}  // namespace mtlsd::tls
