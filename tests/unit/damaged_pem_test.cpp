// PEM files with a damaged block: refused, naming what was read before it, instead of ending
// the file there without a word (review: a CA bundle silently lost its later CAs, a CRL file
// its later CRLs, so `check` said valid and a revoked peer was admitted).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/x509.h>

#include <string>

#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "test_pki.hpp"

namespace {

using ::testing::HasSubstr;
using namespace mtlsd;

struct damaged_pem_fixture {
  test::pki_dir dir;
  test::credential ca = test::make_root_ca({.cn = "Damaged PEM CA"});
  test::credential other = test::make_root_ca({.cn = "Other CA"});

  // A PEM block whose base64 does not decode, between two good ones.
  static std::string damaged_block() {
    return "-----BEGIN CERTIFICATE-----\nMIIB!!!not base64!!!\n-----END CERTIFICATE-----\n";
  }
  std::string crl_pem(const test::credential& issuer) {
    X509_CRL* crl = test::make_crl(issuer, {});
    std::string pem = test::to_pem(crl);
    X509_CRL_free(crl);
    return pem;
  }
  std::string error_of(auto load, const std::string& name, const std::string& content) {
    const config::file_ref f{dir.write(name, content), {}};
    try {
      load(f);
    } catch (const config::config_error& e) {
      return e.what();
    }
    return "";
  }
};

TEST(DamagedPem, ACaBundleWithABadBlockIsRefusedNotCutShort) {
  damaged_pem_fixture f;
  const std::string good = test::to_pem(f.other) + test::to_pem(f.ca);
  EXPECT_EQ(tls::load_cert_chain({f.dir.write("good.crt", good), {}}).size(), 2u);
  EXPECT_THAT(
      f.error_of(tls::load_cert_chain, "bad.crt",
                 test::to_pem(f.other) + damaged_pem_fixture::damaged_block() + test::to_pem(f.ca)),
      HasSubstr("damaged PEM block after 1 certificate(s)"));
  // Cut in the middle of its last block (a writer not done yet): refused too.
  EXPECT_THAT(f.error_of(tls::load_cert_chain, "cut.crt", good.substr(0, good.size() - 300)),
              HasSubstr("damaged PEM block after 1 certificate(s)"));
  // Text around the blocks and blocks of other kinds are not damage.
  const std::string mixed = "subject=CN=Other CA\n" + test::to_pem(f.other) +
                            test::key_to_pem(f.ca.key()) + test::to_pem(f.ca) + "trailing\n";
  EXPECT_EQ(tls::load_cert_chain({f.dir.write("mixed.crt", mixed), {}}).size(), 2u);
}

TEST(DamagedPem, ACrlFileWithABadBlockIsRefusedNotCutShort) {
  damaged_pem_fixture f;
  EXPECT_EQ(
      tls::load_crls({f.dir.write("good.pem", f.crl_pem(f.other) + f.crl_pem(f.ca)), {}}).size(),
      2u);
  const std::string bad = f.crl_pem(f.other) +
                          "-----BEGIN X509 CRL-----\nMIIB!!!\n-----END X509 CRL-----\n" +
                          f.crl_pem(f.ca);
  EXPECT_THAT(f.error_of(tls::load_crls, "bad.pem", bad),
              HasSubstr("damaged PEM block after 1 CRL(s)"));
}

// Review: each listener naming a CRL file decoded it (~0.1 s and ~60 MB per 300,000 entries),
// at start and on every reload. One decode is shared while someone holds it and the bytes stay.
TEST(CrlFile, OneDecodeIsSharedWhileItsBytesStay) {
  damaged_pem_fixture f;
  const config::file_ref ref{f.dir.write("ca.crl", f.crl_pem(f.ca)), {}};
  auto first = tls::load_crl_file(ref);
  auto again = tls::load_crl_file(ref);
  EXPECT_EQ(first, again);
  ASSERT_EQ(first->crls.size(), 1u);
  f.dir.write("ca.crl", f.crl_pem(f.ca) + f.crl_pem(f.other));  // new bytes: decoded again
  auto changed = tls::load_crl_file(ref);
  EXPECT_NE(changed, first);
  EXPECT_EQ(changed->crls.size(), 2u);
  EXPECT_EQ(first->crls.size(), 1u);  // what a runtime holds never changes
  changed.reset();  // nobody holds it: the next load decodes again, and it still works
  EXPECT_EQ(tls::load_crl_file(ref)->crls.size(), 2u);
}

}  // namespace
