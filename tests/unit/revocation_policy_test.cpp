// decide(): the verdict for one peer from each source's answer about each certificate.
#include <gtest/gtest.h>

#include "mtlsd/tls/revocation/policy.hpp"

namespace mtlsd::tls::revocation {
namespace {

answer a(status s, std::string source = "src", std::string detail = {}) {
  return {s, std::move(source), std::move(detail)};
}

level leaf(answer crl_file = {}, answer cdp = {}, answer ocsp = {}) {
  return {"CN=leaf", std::move(crl_file), std::move(cdp), std::move(ocsp)};
}

TEST(RevocationPolicy, NothingCheckedAdmits) {
  verdict v = decide({leaf()}, false);
  EXPECT_FALSE(v.refusal);
  EXPECT_EQ(v.crl, status::not_checked);
  EXPECT_EQ(v.ocsp, status::not_checked);
}

TEST(RevocationPolicy, GoodOcspAdmitsAndNamesTheSource) {
  verdict v = decide({leaf({}, {}, a(status::good, "ocsp http://r"))}, false);
  EXPECT_FALSE(v.refusal);
  EXPECT_EQ(v.ocsp, status::good);
  EXPECT_EQ(v.source, "ocsp http://r");
}

TEST(RevocationPolicy, RevokedRefusesEvenUnderSoftFail) {
  verdict v = decide({leaf({}, {}, a(status::revoked, "ocsp http://r", "keyCompromise"))}, true);
  ASSERT_TRUE(v.refusal);
  EXPECT_EQ(*v.refusal, reason::revoked);
  EXPECT_NE(v.detail.find("keyCompromise"), std::string::npos);
  EXPECT_NE(v.detail.find("depth 0: CN=leaf"), std::string::npos);
  EXPECT_NE(v.detail.find("(ocsp http://r)"), std::string::npos);
  EXPECT_EQ(v.ocsp, status::revoked);
}

TEST(RevocationPolicy, OneGoodAnswerIsEnoughWhenAnotherSourceIsDown) {
  verdict v = decide({leaf(a(status::good, "crl file"), {}, a(status::unavailable))}, false);
  EXPECT_FALSE(v.refusal);
  EXPECT_EQ(v.crl, status::good);
  EXPECT_EQ(v.ocsp, status::unavailable);
}

TEST(RevocationPolicy, RevokedFromAnySourceWinsOverGood) {
  verdict v = decide({leaf(a(status::good), a(status::revoked, "crl http://c"), {})}, false);
  ASSERT_TRUE(v.refusal);
  EXPECT_EQ(*v.refusal, reason::revoked);
  EXPECT_EQ(v.source, "crl http://c");
  EXPECT_EQ(v.crl, status::revoked);
}

TEST(RevocationPolicy, NoAnswerRefusesUnderFail) {
  verdict v = decide({leaf({}, {}, a(status::unavailable, "ocsp http://r", "timeout"))}, false);
  ASSERT_TRUE(v.refusal);
  EXPECT_EQ(*v.refusal, reason::revocation_unavailable);
  EXPECT_NE(v.detail.find("timeout (ocsp http://r)"), std::string::npos);
}

TEST(RevocationPolicy, NoAnswerAdmitsUnderAllowWithANote) {
  verdict v = decide({leaf({}, {}, a(status::unavailable, "ocsp http://r", "timeout"))}, true);
  EXPECT_FALSE(v.refusal);
  EXPECT_NE(v.soft_fail_note.find("timeout"), std::string::npos);
  EXPECT_EQ(v.ocsp, status::unavailable);
}

TEST(RevocationPolicy, UnknownIsNotAnAnswer) {
  verdict v = decide({leaf({}, {}, a(status::unknown))}, false);
  ASSERT_TRUE(v.refusal);
  EXPECT_EQ(*v.refusal, reason::revocation_unavailable);
  EXPECT_EQ(v.ocsp, status::unknown);
}

TEST(RevocationPolicy, EveryLevelNeedsAnAnswer) {
  level intermediate{"CN=int", {}, {}, a(status::unavailable)};
  verdict v = decide({leaf({}, {}, a(status::good)), intermediate}, false);
  ASSERT_TRUE(v.refusal);
  EXPECT_NE(v.detail.find("depth 1: CN=int"), std::string::npos);
}

TEST(RevocationPolicy, RevokedIntermediateRefuses) {
  level intermediate{"CN=int", {}, {}, a(status::revoked, "ocsp http://r")};
  verdict v = decide({leaf({}, {}, a(status::good)), intermediate}, true);
  ASSERT_TRUE(v.refusal);
  EXPECT_EQ(*v.refusal, reason::revoked);
  EXPECT_NE(v.detail.find("depth 1"), std::string::npos);
}

TEST(RevocationPolicy, MetricsTakeTheWorstResultPerMethod) {
  EXPECT_EQ(worst(status::good, status::unavailable), status::unavailable);
  EXPECT_EQ(worst(status::unavailable, status::revoked), status::revoked);
  EXPECT_EQ(worst(status::not_checked, status::good), status::good);
  // The `result` label values of mtlsd_revocation_checks_total.
  EXPECT_EQ(to_string(status::good), "good");
  EXPECT_EQ(to_string(status::revoked), "revoked");
  EXPECT_EQ(to_string(status::unknown), "unknown");
  EXPECT_EQ(to_string(status::unavailable), "unavailable");
}

TEST(RevocationPolicy, FromConfiguration) {
  config::revocation_options rv;
  rv.ocsp = config::ocsp_mode::leaf;
  rv.on_unavailable = config::unavailable_policy::allow;
  rv.crl_grace = std::chrono::minutes(5);
  policy p = policy::from(rv);
  EXPECT_TRUE(p.network());
  EXPECT_TRUE(p.soft_fail);
  EXPECT_EQ(p.grace_seconds, 300);
  EXPECT_TRUE(p.ocsp_at(0));
  EXPECT_FALSE(p.ocsp_at(1));
  EXPECT_TRUE(p.crl_at(1));  // crl_scope: chain by default
}

}  // namespace
}  // namespace mtlsd::tls::revocation
