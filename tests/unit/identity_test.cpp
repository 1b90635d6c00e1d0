// tls::extract_identity and tls::sha256_fingerprint on certificates made by test_pki.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/identity.hpp"
#include "test_pki.hpp"

namespace mtlsd::tls {
namespace {

using ::testing::ElementsAre;

std::string hex(const unsigned char* p, std::size_t n) {
  std::string out;
  char buf[3];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", p[i]);
    out += buf;
  }
  return out;
}

class IdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new test::credential(test::make_root_ca({.cn = "Identity Root"}));
  }
  static void TearDownTestSuite() { delete root_; }
  static test::credential* root_;
};
test::credential* IdentityTest::root_ = nullptr;

TEST_F(IdentityTest, AllNamesOfAWorkloadCertificate) {
  const std::time_t not_after = test::now() + test::days(90);
  test::credential c = test::make_leaf(
      *root_, {.cn = "api",
               .ous = {"payments", "eu-west"},
               .org = "Example Corp",
               .uri_sans = {"https://api.example.org/id", "spiffe://example.org/ns/prod/sa/api"},
               .dns_sans = {"api.svc.cluster.local", "api.example.org"},
               .ip_sans = {"10.1.2.3", "2001:db8::1"},
               .not_after = not_after,
               .serial = 0x0A1B2C3D4EULL});
  // The IP SANs sit among the names without disturbing them; no allow key and no log line
  // reads a peer's IP SANs, so peer_identity keeps none.
  peer_identity id = extract_identity(c.cert());

  // The spiffe:// URI, even when another URI comes before it.
  EXPECT_EQ(id.spiffe_id, "spiffe://example.org/ns/prod/sa/api");
  EXPECT_TRUE(id.spiffe_id_problem.empty());
  EXPECT_THAT(id.uri_sans,
              ElementsAre("https://api.example.org/id", "spiffe://example.org/ns/prod/sa/api"));
  EXPECT_THAT(id.dns_sans, ElementsAre("api.svc.cluster.local", "api.example.org"));
  EXPECT_EQ(id.common_name, "api");
  EXPECT_THAT(id.organizational_units, ElementsAre("payments", "eu-west"));
  EXPECT_EQ(id.subject, "CN=api,OU=eu-west,OU=payments,O=Example Corp");
  EXPECT_EQ(id.issuer, "CN=Identity Root,O=mtlsd tests");
  EXPECT_EQ(id.serial, "0A1B2C3D4E");
  EXPECT_EQ(id.not_after, not_after);
  EXPECT_EQ(id.display(), "spiffe://example.org/ns/prod/sa/api");
}

// Review: spiffe://example.org/ns/prod/../../admin matched the rule spiffe://example.org/ns/prod/*
// (an upstream that normalises paths reads /admin), and of two spiffe:// URI SANs the first won.
TEST_F(IdentityTest, OnlyAWellFormedSpiffeIdCounts) {
  const auto spiffe_of = [](const std::vector<std::string>& uris) {
    return extract_identity(test::make_leaf(*root_, {.cn = "w", .uri_sans = uris}).cert());
  };
  for (const char* bad :
       {"spiffe://example.org/ns/prod/../../admin", "spiffe://example.org/ns/prod/%2e%2e/admin",
        "spiffe://example.org/ns/prod/sa/x?y", "spiffe://EXAMPLE.org/a",
        "spiffe://evil@example.org/a", "spiffe://example.org:443/a", "spiffe://example.org/a/",
        "spiffe://example.org//a", "spiffe://example.org", "spiffe://example.org/"}) {
    const peer_identity id = spiffe_of({bad});
    EXPECT_EQ(id.spiffe_id, "") << bad;
    EXPECT_NE(id.spiffe_id_problem.find("is no workload's SPIFFE ID"), std::string::npos) << bad;
    EXPECT_EQ(id.display(), id.subject) << bad;
  }
  const peer_identity two = spiffe_of({"spiffe://example.org/a", "spiffe://example.org/b"});
  EXPECT_EQ(two.spiffe_id, "");
  EXPECT_EQ(two.spiffe_id_problem,
            "the certificate has 2 spiffe:// URI SANs; an X.509-SVID has one");
  EXPECT_EQ(spiffe_of({"spiffe://example.org"}).spiffe_id_problem,
            "its spiffe:// URI SAN is no workload's SPIFFE ID: it names only a trust domain (a "
            "workload's SPIFFE ID has a path)");
  EXPECT_EQ(spiffe_of({"spiffe://td_1.example-2.org/Ns/a.b-c_d"}).spiffe_id,
            "spiffe://td_1.example-2.org/Ns/a.b-c_d");
  EXPECT_EQ(spiffe_of({"spiffe://example.org/" + std::string(2100, 'a')}).spiffe_id, "");
}

TEST_F(IdentityTest, CertificateWithoutSans) {
  test::credential c = test::make_leaf(*root_, {.cn = "legacy client", .serial = 0x1234});
  peer_identity id = extract_identity(c.cert());
  EXPECT_EQ(id.spiffe_id, "");
  EXPECT_TRUE(id.uri_sans.empty());
  EXPECT_TRUE(id.dns_sans.empty());
  EXPECT_TRUE(id.organizational_units.empty());
  EXPECT_EQ(id.common_name, "legacy client");
  EXPECT_EQ(id.subject, "CN=legacy client,O=mtlsd tests");
  EXPECT_EQ(id.serial, "1234");
  // Without a SPIFFE ID, logs show the subject.
  EXPECT_EQ(id.display(), "CN=legacy client,O=mtlsd tests");
}

TEST_F(IdentityTest, NonSpiffeUrisGiveNoSpiffeId) {
  test::credential c = test::make_leaf(
      *root_, {.cn = "x", .uri_sans = {"https://x.example.org", "urn:example:spiffe://no"}});
  peer_identity id = extract_identity(c.cert());
  EXPECT_EQ(id.spiffe_id, "");
  EXPECT_THAT(id.uri_sans, ElementsAre("https://x.example.org", "urn:example:spiffe://no"));
}

TEST_F(IdentityTest, Utf8SubjectValues) {
  test::credential c =
      test::make_leaf(*root_, {.cn = "Jos\xC3\xA9", .ous = {"\xC3\x89quipe"}});  // José, Équipe
  peer_identity id = extract_identity(c.cert());
  EXPECT_EQ(id.common_name, "Jos\xC3\xA9");
  EXPECT_THAT(id.organizational_units, ElementsAre("\xC3\x89quipe"));
  EXPECT_EQ(id.subject, "CN=Jos\xC3\xA9,OU=\xC3\x89quipe,O=mtlsd tests");
}

TEST_F(IdentityTest, Sha256IsTheDigestOfTheDer) {
  test::credential c = test::make_leaf(*root_, {.cn = "fp"});
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  ASSERT_EQ(X509_digest(c.cert(), EVP_sha256(), md.data(), &len), 1);
  ASSERT_EQ(len, 32u);
  const std::string expected = hex(md.data(), len);
  EXPECT_EQ(sha256_fingerprint(c.cert()), expected);
  EXPECT_EQ(extract_identity(c.cert()).sha256, expected);

  // Independently: SHA-256 over the DER bytes.
  const std::string der = test::to_der(c.cert());
  unsigned char md2[32];
  unsigned int len2 = 0;
  ASSERT_EQ(EVP_Digest(der.data(), der.size(), md2, &len2, EVP_sha256(), nullptr), 1);
  EXPECT_EQ(hex(md2, len2), expected);
}

TEST_F(IdentityTest, DifferentCertificatesDifferentFingerprints) {
  test::credential a = test::make_leaf(*root_, {.cn = "same"});
  test::credential b = test::make_leaf(*root_, {.cn = "same"});
  EXPECT_NE(sha256_fingerprint(a.cert()), sha256_fingerprint(b.cert()));
}

TEST_F(IdentityTest, SerialIsUpperCaseHexLikeOpenSslCli) {
  test::credential c = test::make_leaf(*root_, {.cn = "s", .serial = 0xABCDEF0123456789ULL});
  EXPECT_EQ(extract_identity(c.cert()).serial, "ABCDEF0123456789");
  EXPECT_EQ(serial_of(c.cert()), "ABCDEF0123456789");
}

TEST_F(IdentityTest, ValidityHelpers) {
  const std::time_t nb = 1'700'000'000;
  const std::time_t na = 1'900'000'000;
  test::credential c = test::make_leaf(*root_, {.cn = "v", .not_before = nb, .not_after = na});
  EXPECT_EQ(not_before_of(c.cert()), nb);
  EXPECT_EQ(not_after_of(c.cert()), na);
  EXPECT_EQ(extract_identity(c.cert()).not_after, na);
}

// extract_identity keeps the last few answers per thread, keyed by the certificate's DER: more
// certificates than it keeps, asked in turns and twice over, each get their own identity, and
// two certificates alike but for the serial are told apart.
TEST_F(IdentityTest, RecentAnswersAreKeptWithoutMixingCertificatesUp) {
  std::vector<test::credential> leaves;
  for (unsigned i = 0; i < 11; ++i)
    leaves.push_back(test::make_leaf(*root_, {.cn = "same", .serial = 100u + i}));
  std::vector<std::string> first;
  for (const auto& c : leaves)
    first.push_back(extract_identity(c.cert()).sha256);
  for (int round = 0; round < 2; ++round)
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      const auto again = extract_identity(leaves[i].cert());
      EXPECT_EQ(again.sha256, first[i]) << i;
      char serial[17];
      std::snprintf(serial, sizeof serial, "%X", static_cast<unsigned>(100 + i));
      EXPECT_EQ(again.serial, serial) << i;
    }
  for (std::size_t i = 1; i < first.size(); ++i)
    EXPECT_NE(first[i], first[0]) << i;
}

TEST(Identity, NullCertificateGivesAnEmptyIdentity) {
  peer_identity id = extract_identity(nullptr);
  EXPECT_EQ(id.subject, "");
  EXPECT_EQ(id.sha256, "");
  EXPECT_TRUE(id.uri_sans.empty());
}

}  // namespace
}  // namespace mtlsd::tls

namespace mtlsd::tls {
namespace {

// Review: a certificate with an empty subject and no SPIFFE ID (the strict profile admits it
// with a critical SAN) had "" for its identity, and max_connections_per_identity skipped it.
TEST(Identity, APeerThatNamesNobodyIsCountedByItsFingerprint) {
  const test::credential root = test::make_root_ca({.cn = "limit key root"});
  const test::credential anonymous =
      test::make_leaf(root, {.org = "", .dns_sans = {"anon.example.org"}});
  const peer_identity id = extract_identity(anonymous.cert());
  ASSERT_EQ(id.display(), "");
  EXPECT_EQ(id.limit_key(), "sha256:" + id.sha256);
  EXPECT_EQ(id.sha256.size(), 64u);
  const test::credential named = test::make_leaf(root, {.cn = "named"});
  EXPECT_EQ(extract_identity(named.cert()).limit_key(), extract_identity(named.cert()).display());
}

}  // namespace
}  // namespace mtlsd::tls
