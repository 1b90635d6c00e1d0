// Self-test of the test PKI helper: what it makes is what other suites assume it makes.
#include "test_pki.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace mtlsd::test {
namespace {

using ::testing::StartsWith;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TestPki, CaCertificatesAreCas) {
  credential root = make_root_ca({.cn = "R", .path_length = 1});
  credential inter = make_intermediate(root, {.cn = "I"});
  EXPECT_EQ(X509_check_ca(root.cert()), 1);
  EXPECT_EQ(X509_check_ca(inter.cert()), 1);
  EXPECT_EQ(X509_check_issued(root.cert(), root.cert()), X509_V_OK);
  EXPECT_EQ(X509_check_issued(root.cert(), inter.cert()), X509_V_OK);
  EXPECT_EQ(X509_get_pathlen(root.cert()), 1);
  EXPECT_EQ(X509_get_pathlen(inter.cert()), -1);
  EXPECT_EQ(X509_verify(inter.cert(), root.key()), 1);
}

TEST(TestPki, LeafIsNotACaAndCarriesItsExtensions) {
  credential root = make_root_ca({.cn = "R"});
  credential leaf = make_leaf(root, {.cn = "l",
                                     .usage = key_usage::server,
                                     .serial = 42,
                                     .crl_distribution_point = "http://127.0.0.1:1/r.crl",
                                     .ocsp_url = "http://127.0.0.1:2/ocsp"});
  EXPECT_EQ(X509_check_ca(leaf.cert()), 0);
  EXPECT_EQ(X509_check_issued(root.cert(), leaf.cert()), X509_V_OK);
  EXPECT_EQ(X509_verify(leaf.cert(), root.key()), 1);
  EXPECT_EQ(serial_of(leaf.cert()), 42u);
  EXPECT_EQ(X509_get_extended_key_usage(leaf.cert()), static_cast<std::uint32_t>(XKU_SSL_SERVER));
  EXPECT_EQ(X509_check_private_key(leaf.cert(), leaf.key()), 1);

  STACK_OF(OPENSSL_STRING)* ocsp = X509_get1_ocsp(leaf.cert());
  ASSERT_NE(ocsp, nullptr);
  ASSERT_EQ(sk_OPENSSL_STRING_num(ocsp), 1);
  EXPECT_STREQ(sk_OPENSSL_STRING_value(ocsp, 0), "http://127.0.0.1:2/ocsp");
  X509_email_free(ocsp);  // frees an OPENSSL_STRING stack

  auto* dps = static_cast<CRL_DIST_POINTS*>(
      X509_get_ext_d2i(leaf.cert(), NID_crl_distribution_points, nullptr, nullptr));
  ASSERT_NE(dps, nullptr);
  EXPECT_EQ(sk_DIST_POINT_num(dps), 1);
  CRL_DIST_POINTS_free(dps);
}

TEST(TestPki, DefaultValidityWindow) {
  std::time_t t = now();
  credential leaf = make_self_signed({.cn = "s"});
  int day = 0, sec = 0;
  ASSERT_EQ(ASN1_TIME_diff(&day, &sec, nullptr, X509_get0_notAfter(leaf.cert())), 1);
  EXPECT_NEAR(day, 365, 1);
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(leaf.cert()), &t), 0);  // already valid
}

TEST(TestPki, KeyEncodings) {
  EVP_PKEY* key = make_key();
  EXPECT_EQ(EVP_PKEY_get_bits(key), 256);
  EXPECT_THAT(key_to_pem(key), StartsWith("-----BEGIN PRIVATE KEY-----"));
  EXPECT_THAT(key_to_traditional_pem(key), StartsWith("-----BEGIN EC PRIVATE KEY-----"));
  const std::string enc = key_to_encrypted_pem(key, "pw");
  EXPECT_THAT(enc, StartsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

  BIO* bio = BIO_new_mem_buf(enc.data(), static_cast<int>(enc.size()));
  char pw[] = "pw";
  EVP_PKEY* back = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, pw);
  BIO_free(bio);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(EVP_PKEY_eq(key, back), 1);
  EVP_PKEY_free(back);
  EVP_PKEY_free(key);
}

TEST(TestPki, Pkcs12RoundTrip) {
  credential root = make_root_ca({.cn = "R"});
  credential leaf = make_leaf(root, {.cn = "p"});
  const std::string der = to_pkcs12(leaf, {root}, "secret");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(der.size()));
  ASSERT_NE(p12, nullptr);
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  STACK_OF(X509)* ca = nullptr;
  ASSERT_EQ(PKCS12_parse(p12, "secret", &key, &cert, &ca), 1);
  EXPECT_EQ(X509_cmp(cert, leaf.cert()), 0);
  EXPECT_EQ(EVP_PKEY_eq(key, leaf.key()), 1);
  ASSERT_EQ(sk_X509_num(ca), 1);
  EXPECT_EQ(X509_cmp(sk_X509_value(ca, 0), root.cert()), 0);
  EVP_PKEY_free(key);
  X509_free(cert);
  sk_X509_pop_free(ca, X509_free);
  key = nullptr;
  cert = nullptr;
  ca = nullptr;
  EXPECT_EQ(PKCS12_parse(p12, "wrong", &key, &cert, &ca), 0);
  EVP_PKEY_free(key);
  X509_free(cert);
  sk_X509_pop_free(ca, X509_free);
  PKCS12_free(p12);
}

TEST(TestPki, CrlListsRevokedSerials) {
  credential root = make_root_ca({.cn = "R"});
  X509_CRL* crl =
      make_crl(root, {.revoked = {{7, now() - hours(1)}, {9, now() - hours(1)}}, .crl_number = 3});
  EXPECT_EQ(X509_CRL_verify(crl, root.key()), 1);
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
  EXPECT_EQ(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(root.cert())), 0);
  auto* number =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, nullptr, nullptr));
  ASSERT_NE(number, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(number), 3);
  ASN1_INTEGER_free(number);
  EXPECT_THAT(to_pem(crl), StartsWith("-----BEGIN X509 CRL-----"));
  EXPECT_FALSE(to_der(crl).empty());
  X509_CRL_free(crl);
}

TEST(TestPki, DirectoryWritesWithModesAndCleansUp) {
  std::filesystem::path where;
  {
    pki_dir dir;
    where = dir.path();
    credential root = make_root_ca({.cn = "R"});
    auto files = dir.write_pair("sub/root", root);
    EXPECT_EQ(files.cert, (where / "sub/root.crt").string());
    EXPECT_EQ(slurp(files.cert), to_pem(root));
    EXPECT_EQ(slurp(files.key), key_to_pem(root.key()));
    struct stat st {};
    ASSERT_EQ(::stat(files.key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    ASSERT_EQ(::stat(dir.write("x", "y", 0640).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
  }
  EXPECT_FALSE(std::filesystem::exists(where));
}

}  // namespace
}  // namespace mtlsd::test
