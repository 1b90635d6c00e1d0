// tls::match_spiffe_id, tls::match_dns_name and tls::evaluate over identities taken from real
// certificates (test_pki), as design.md asks: policy is pure functions tested with real PEMs.
#include <gtest/gtest.h>

#include "mtlsd/tls/identity.hpp"
#include "mtlsd/tls/peer_policy.hpp"
#include "test_pki.hpp"

namespace mtlsd::tls {
namespace {

// --- SPIFFE IDs -----------------------------------------------------------------------------

TEST(MatchSpiffeId, Exact) {
  EXPECT_TRUE(match_spiffe_id("spiffe://example.org/ns/prod/sa/api",
                              "spiffe://example.org/ns/prod/sa/api"));
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod/sa/api",
                               "spiffe://example.org/ns/prod/sa/api2"));
  EXPECT_FALSE(
      match_spiffe_id("spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa"));
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/a", "spiffe://other.org/a"));
  // SPIFFE IDs are compared byte for byte (no case folding).
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/A", "spiffe://example.org/a"));
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/a", ""));
}

TEST(MatchSpiffeId, TrailingSlashStarMatchesEverythingBelow) {
  const char* p = "spiffe://example.org/ns/prod/*";
  EXPECT_TRUE(match_spiffe_id(p, "spiffe://example.org/ns/prod/sa/api"));
  EXPECT_TRUE(match_spiffe_id(p, "spiffe://example.org/ns/prod/x"));
  EXPECT_TRUE(match_spiffe_id(p, "spiffe://example.org/ns/prod/a/b/c/d"));
  EXPECT_FALSE(match_spiffe_id(p, "spiffe://example.org/ns/staging/sa/api"));
  EXPECT_FALSE(match_spiffe_id(p, "spiffe://evil.org/ns/prod/sa/api"));
  EXPECT_TRUE(match_spiffe_id("spiffe://example.org/*", "spiffe://example.org/anything"));
}

TEST(MatchSpiffeId, PrefixMatchIncludesTheSlash) {
  // "prod/*" must not admit "production/...": the '/' is part of the prefix.
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod/*",
                               "spiffe://example.org/ns/production/sa/api"));
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prodx"));
}

TEST(MatchSpiffeId, BarePrefixItselfDoesNotMatch) {
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod"));
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/"));
}

TEST(MatchSpiffeId, StarWithoutSlashIsNotAWildcard) {
  EXPECT_FALSE(match_spiffe_id("spiffe://example.org/ns/prod*", "spiffe://example.org/ns/prodx"));
  EXPECT_TRUE(match_spiffe_id("spiffe://example.org/ns/prod*", "spiffe://example.org/ns/prod*"));
  EXPECT_FALSE(match_spiffe_id("*", "spiffe://example.org/a"));
}

// --- DNS names ------------------------------------------------------------------------------

TEST(MatchDnsName, ExactIsCaseInsensitive) {
  EXPECT_TRUE(match_dns_name("api.example.org", "api.example.org"));
  EXPECT_TRUE(match_dns_name("api.example.org", "API.Example.ORG"));
  EXPECT_TRUE(match_dns_name("Api.Example.Org", "api.example.org"));
  EXPECT_FALSE(match_dns_name("api.example.org", "api.example.org.evil"));
  EXPECT_FALSE(match_dns_name("api.example.org", "xapi.example.org"));
  EXPECT_FALSE(match_dns_name("api.example.org", ""));
}

TEST(MatchDnsName, WildcardMatchesExactlyOneLabel) {
  EXPECT_TRUE(match_dns_name("*.example.org", "a.example.org"));
  EXPECT_TRUE(match_dns_name("*.example.org", "API.EXAMPLE.ORG"));
  EXPECT_TRUE(match_dns_name("*.Example.org", "web-1.example.ORG"));
  EXPECT_FALSE(match_dns_name("*.example.org", "example.org"));
  EXPECT_FALSE(match_dns_name("*.example.org", "a.b.example.org"));
  EXPECT_FALSE(match_dns_name("*.example.org", ".example.org"));
  EXPECT_FALSE(match_dns_name("*.example.org", "a.example.org.evil.com"));
  EXPECT_FALSE(match_dns_name("*.example.org", "aexample.org"));
  EXPECT_FALSE(match_dns_name("*.example.org", "a.other.org"));
}

// --- evaluate() on real certificates --------------------------------------------------------

class EvaluateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new test::credential(test::make_root_ca({.cn = "Policy Root"}));
    alice_ = new peer_identity(extract_identity(
        test::make_leaf(*root_, {.cn = "alice",
                                 .ous = {"payments", "eu"},
                                 .uri_sans = {"https://alice.example.org/id",
                                              "spiffe://example.org/ns/prod/sa/alice"},
                                 .dns_sans = {"alice.svc.example.org", "alice.example.org"},
                                 .ip_sans = {"10.0.0.1"}})
            .cert()));
    // No SANs, no OU: only the CN and the fingerprint can admit it.
    plain_ = new peer_identity(extract_identity(test::make_leaf(*root_, {.cn = "plain"}).cert()));
  }
  static void TearDownTestSuite() {
    delete root_;
    delete alice_;
    delete plain_;
  }

  static test::credential* root_;
  static peer_identity* alice_;
  static peer_identity* plain_;
};

test::credential* EvaluateTest::root_ = nullptr;
peer_identity* EvaluateTest::alice_ = nullptr;
peer_identity* EvaluateTest::plain_ = nullptr;

TEST_F(EvaluateTest, IdentityFromTheCertificate) {
  // The inputs the other tests rely on.
  EXPECT_EQ(alice_->spiffe_id, "spiffe://example.org/ns/prod/sa/alice");
  EXPECT_EQ(alice_->common_name, "alice");
  EXPECT_EQ(plain_->spiffe_id, "");
  EXPECT_EQ(plain_->sha256.size(), 64u);
}

TEST_F(EvaluateTest, EmptyAllowListAdmitsEveryone) {
  config::allow_list none;
  EXPECT_TRUE(evaluate(none, *alice_).allowed);
  EXPECT_TRUE(evaluate(none, *plain_).allowed);
  EXPECT_EQ(evaluate(none, *plain_).detail, "");
}

TEST_F(EvaluateTest, SpiffeIds) {
  config::allow_list a;
  a.spiffe_ids = {"spiffe://example.org/ns/prod/sa/alice"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.spiffe_ids = {"spiffe://example.org/ns/prod/*"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.spiffe_ids = {"spiffe://example.org/ns/staging/*", "spiffe://example.org/ns/prod/sa/bob"};
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.spiffe_ids = {"spiffe://example.org/ns/prod/*"};
  EXPECT_FALSE(evaluate(a, *plain_).allowed);  // no SPIFFE ID at all
}

TEST_F(EvaluateTest, UriSansAreExactAndCoverEveryUri) {
  config::allow_list a;
  a.uri_sans = {"https://alice.example.org/id"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.uri_sans = {"spiffe://example.org/ns/prod/sa/alice"};  // the SPIFFE ID is a URI SAN too
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.uri_sans = {"https://alice.example.org/"};
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.uri_sans = {"https://alice.example.org/*"};  // no wildcards in uri_sans
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
}

TEST_F(EvaluateTest, DnsSans) {
  config::allow_list a;
  a.dns_sans = {"alice.example.org"};  // the second DNS SAN
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.dns_sans = {"*.svc.example.org"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.dns_sans = {"*.example.org"};  // alice.example.org is one label below
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.dns_sans = {"bob.example.org", "*.other.org"};
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.dns_sans = {"*.org"};  // one label only: alice.example.org is two below
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
}

TEST_F(EvaluateTest, CommonNames) {
  config::allow_list a;
  a.common_names = {"alice"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  EXPECT_FALSE(evaluate(a, *plain_).allowed);
  a.common_names = {"Alice"};  // exact, case-sensitive
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.common_names = {"plain"};
  EXPECT_TRUE(evaluate(a, *plain_).allowed);
}

TEST_F(EvaluateTest, OrganizationalUnits) {
  config::allow_list a;
  a.organizational_units = {"eu"};  // the second OU
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.organizational_units = {"payments"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  a.organizational_units = {"us", "mtlsd tests"};  // O is not an OU
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  EXPECT_FALSE(evaluate(a, *plain_).allowed);
}

TEST_F(EvaluateTest, Fingerprints) {
  config::allow_list a;
  a.sha256_fingerprints = {plain_->sha256};
  EXPECT_TRUE(evaluate(a, *plain_).allowed);
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.sha256_fingerprints = {std::string(64, '0'), alice_->sha256};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
}

TEST_F(EvaluateTest, ListsAreAlternatives) {
  // Only the DNS list matches, the others miss: admitted (OR across lists).
  config::allow_list a;
  a.spiffe_ids = {"spiffe://example.org/ns/staging/*"};
  a.common_names = {"bob"};
  a.organizational_units = {"hr"};
  a.sha256_fingerprints = {std::string(64, 'f')};
  EXPECT_FALSE(evaluate(a, *alice_).allowed);
  a.dns_sans = {"alice.svc.example.org"};
  EXPECT_TRUE(evaluate(a, *alice_).allowed);
  // And a CN match admits the SAN-less certificate despite the other lists.
  EXPECT_FALSE(evaluate(a, *plain_).allowed);
  a.common_names.push_back("plain");
  EXPECT_TRUE(evaluate(a, *plain_).allowed);
}

TEST_F(EvaluateTest, RefusalDetailNamesThePeer) {
  config::allow_list a;
  a.common_names = {"bob"};
  policy_decision d = evaluate(a, *alice_);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.detail,
            "certificate matches no allow rule: spiffe_id=spiffe://example.org/ns/prod/sa/alice "
            "dns=alice.svc.example.org,alice.example.org cn=alice ou=payments,eu sha256=" +
                alice_->sha256);
  d = evaluate(a, *plain_);
  EXPECT_EQ(d.detail, "certificate matches no allow rule: cn=plain sha256=" + plain_->sha256);
}

}  // namespace
}  // namespace mtlsd::tls
