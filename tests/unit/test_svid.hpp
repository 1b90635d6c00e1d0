#pragma once
// X.509-SVIDs as the SPIFFE Workload API sends them (tls::spiffe::raw_x509_svid: DER
// certificates, a DER PKCS#8 key), made of test_pki credentials, for the tests of what mtlsd
// makes of them (spiffe_x509_context_test, svid_graft_test).
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstddef>
#include <string>

#include "mtlsd/tls/spiffe/x509_context.hpp"
#include "test_pki.hpp"

namespace mtlsd::test {

// A private key as the Workload API sends it: DER PKCS#8, unencrypted.
inline std::string pkcs8_der(EVP_PKEY* key) {
  PKCS8_PRIV_KEY_INFO* p8 = EVP_PKEY2PKCS8(key);
  unsigned char* buf = nullptr;
  const int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &buf);
  std::string out(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  OPENSSL_free(buf);
  PKCS8_PRIV_KEY_INFO_free(p8);
  return out;
}

// The SVID `leaf` (its certificate and key) for `id`, with `root` as our trust domain's bundle
// and no federated bundle.
inline tls::spiffe::raw_x509_svid raw_svid(const std::string& id, const credential& leaf,
                                           const credential& root) {
  tls::spiffe::raw_x509_svid r;
  r.spiffe_id = id;
  r.x509_svid = to_der(leaf.cert());
  r.x509_svid_key = pkcs8_der(leaf.key());
  r.bundle = to_der(root.cert());
  return r;
}

}  // namespace mtlsd::test
