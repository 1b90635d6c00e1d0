#pragma once
// RAII owners for OpenSSL objects and the error-queue helper every factory uses.
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

namespace mtlsd::tls {

template <auto Free>
struct openssl_deleter {
  template <class T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};

using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using x509_crl_ptr = std::unique_ptr<X509_CRL, openssl_deleter<X509_CRL_free>>;
using evp_pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, openssl_deleter<SSL_CTX_free>>;
using ssl_ptr = std::unique_ptr<SSL, openssl_deleter<SSL_free>>;
using x509_store_ptr = std::unique_ptr<X509_STORE, openssl_deleter<X509_STORE_free>>;
using x509_store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, openssl_deleter<X509_STORE_CTX_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;

// Shared, immutable certificates (a chain is loaded once per runtime and read by every worker).
using cert_chain = std::vector<x509_ptr>;

// Sorts a decoded CRL's revoked entries, as OpenSSL's first serial lookup would. OpenSSL 3.0
// sorts lazily and takes the CRL's lock only to sort: a thread reading the entries meanwhile
// (the recheck's serial list) missed thousands of them (review). Sorted before the CRL is
// shared, it is only ever read. The CRL's cached encoding and digests do not change.
inline void sort_revoked(X509_CRL* crl) {
  if (crl) sk_X509_REVOKED_sort(X509_CRL_get_REVOKED(crl));
}

inline x509_ptr up_ref(X509* c) {
  X509_up_ref(c);
  return x509_ptr(c);
}

// Empties this thread's OpenSSL error queue into one readable string ("" when it was empty).
// OpenSSL's queue is per thread, and a stale entry makes the next SSL_get_error() lie, so every
// failure path drains it.
std::string drain_errors();

}  // namespace mtlsd::tls
