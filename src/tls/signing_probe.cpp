#include "mtlsd/tls/signing_probe.hpp"

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

std::string sign_probe(EVP_PKEY* key) {
  if (!key) return "no private key";
  static constexpr unsigned char message[] = "mtlsd: can this key sign?";
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_PKEY_CTX* pctx = nullptr;  // owned by `md`
  std::size_t len = 0;
  bool ok = md && EVP_DigestSignInit(md.get(), &pctx, EVP_sha256(), nullptr, key) == 1;
  if (ok && EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA)
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  ok = ok && EVP_DigestSign(md.get(), nullptr, &len, message, sizeof message) == 1;
  std::vector<unsigned char> sig(len);
  ok = ok && EVP_DigestSign(md.get(), sig.data(), &len, message, sizeof message) == 1;
  if (ok) return {};
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

}  // namespace mtlsd::tls
