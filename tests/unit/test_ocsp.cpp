#include "test_ocsp.hpp"

#include <gtest/gtest.h>

namespace mtlsd::test {

std::string ocsp_response(const credential& ca, const credential& leaf, int status,
                          std::time_t this_update, std::time_t next_update) {
  OCSP_BASICRESP* basic = OCSP_BASICRESP_new();
  OCSP_CERTID* id = OCSP_cert_to_id(nullptr, leaf.cert(), ca.cert());
  ASN1_TIME* thisupd = ASN1_TIME_set(nullptr, this_update);
  ASN1_TIME* nextupd = next_update ? ASN1_TIME_set(nullptr, next_update) : nullptr;
  const bool revoked = status == V_OCSP_CERTSTATUS_REVOKED;
  ASN1_TIME* revoked_at = revoked ? ASN1_TIME_set(nullptr, this_update - 3600) : nullptr;
  EXPECT_NE(
      OCSP_basic_add1_status(basic, id, status, revoked ? OCSP_REVOKED_STATUS_KEYCOMPROMISE : 0,
                             revoked_at, thisupd, nextupd),
      nullptr);
  EXPECT_EQ(OCSP_basic_sign(basic, ca.cert(), ca.key(), EVP_sha256(), nullptr, 0), 1);
  OCSP_RESPONSE* resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic);
  unsigned char* der = nullptr;
  const int n = i2d_OCSP_RESPONSE(resp, &der);
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(n));
  OPENSSL_free(der);
  OCSP_RESPONSE_free(resp);
  ASN1_TIME_free(revoked_at);
  ASN1_TIME_free(nextupd);
  ASN1_TIME_free(thisupd);
  OCSP_CERTID_free(id);
  OCSP_BASICRESP_free(basic);
  return out;
}

}  // namespace mtlsd::test
