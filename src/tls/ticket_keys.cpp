#include "mtlsd/tls/ticket_keys.hpp"

#include "mtlsd/tls/ticket_key_ring.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace mtlsd::tls {
namespace {

// No destructor runs at exit (so none wipes the keys): a worker thread may still be in a
// ticket callback while the process exits.
static_assert(std::is_trivially_destructible_v<ticket_key_ring>);
ticket_key_ring& ring() {
  static ticket_key_ring r(ticket_key_period);
  return r;
}

bool set_hmac_key(EVP_MAC_CTX* hctx, ticket_key& k) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac.data(), k.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

// OpenSSL's contract: on issue 1 = done, negative = error; on receipt 0 = unknown key (full
// handshake), 1 = fine, 2 = fine and issue a fresh ticket.
int ticket_key_callback(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx,
                        EVP_MAC_CTX* hctx, int enc) {
  try {
    ticket_key_copy copy;
    const auto now = std::chrono::steady_clock::now();
    if (enc) {
      ring().for_issuing(now, copy);
      ticket_key& k = *copy.key;
      std::memcpy(key_name, k.name.data(), k.name.size());
      if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
      if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) != 1) return -1;
      return set_hmac_key(hctx, k) ? 1 : -1;
    }
    ring().for_decrypting(key_name, now, copy);
    if (!copy.key) return 0;
    ticket_key& k = *copy.key;
    if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) != 1) return -1;
    if (!set_hmac_key(hctx, k)) return -1;
    // TLS 1.3 sends a fresh ticket after a resumption only on "renew" (OpenSSL's own key
    // handling does the same), and a client that chains resumptions needs it. TLS 1.2 keeps its
    // ticket, as with OpenSSL's own keys (renewing there broke test_client_mode's chained
    // resumption over 1.2; not investigated further).
    return SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
  } catch (const std::exception&) {
    return -1;  // an exception must not cross OpenSSL's C frames
  }
}

}  // namespace

void use_shared_ticket_keys(SSL_CTX* ctx) {
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_callback);
}

void bind_session_context(SSL_CTX* ctx, const std::string& listener_name,
                          const std::string& binding) {
  // Per trusted object its SHA-256, sorted: the digest does not depend on insertion order.
  std::vector<std::array<unsigned char, SHA256_DIGEST_LENGTH>> objects;
  if (X509_STORE* store = SSL_CTX_get_cert_store(ctx)) {
    STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objs); ++i) {
      X509_OBJECT* o = sk_X509_OBJECT_value(objs, i);
      std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
      unsigned int len = 0;
      if (X509* x = X509_OBJECT_get0_X509(o))
        X509_digest(x, EVP_sha256(), d.data(), &len);
      else if (X509_CRL* c = X509_OBJECT_get0_X509_CRL(o))
        X509_CRL_digest(c, EVP_sha256(), d.data(), &len);
      objects.push_back(d);
    }
  }
  std::sort(objects.begin(), objects.end());
  const long settings[] = {SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_depth(ctx),
                           static_cast<long>(X509_VERIFY_PARAM_get_flags(SSL_CTX_get0_param(ctx)))};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char sid[SHA256_DIGEST_LENGTH];
  bool ok = md && EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(md.get(), listener_name.data(), listener_name.size()) == 1 &&
            EVP_DigestUpdate(md.get(), settings, sizeof settings) == 1 &&
            EVP_DigestUpdate(md.get(), binding.data(), binding.size()) == 1;
  for (const auto& d : objects)
    ok = ok && EVP_DigestUpdate(md.get(), d.data(), d.size()) == 1;
  if (!ok || EVP_DigestFinal_ex(md.get(), sid, nullptr) != 1)
    throw std::runtime_error("cannot compute the session id context");
  SSL_CTX_set_session_id_context(ctx, sid, SSL_MAX_SID_CTX_LENGTH);
}

}  // namespace mtlsd::tls
