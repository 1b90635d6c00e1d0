// check_ocsp_response's freshness rules (tls/revocation/ocsp.hpp) on responses built with
// OpenSSL (test_ocsp.hpp), so that thisUpdate and nextUpdate can be any time.
#include <gtest/gtest.h>
#include <openssl/ocsp.h>

#include <string>

#include "mtlsd/tls/revocation/ocsp.hpp"
#include "test_ocsp.hpp"
#include "test_pki.hpp"

namespace {

using mtlsd::test::credential;
using mtlsd::test::days;
namespace rev = mtlsd::tls::revocation;

struct freshness_fixture {
  credential ca = mtlsd::test::make_root_ca({.cn = "OCSP freshness CA"});
  credential leaf = mtlsd::test::make_leaf(ca, {.cn = "leaf"});
};

// A response about f.leaf, signed by f.ca (test_ocsp.hpp).
std::string response(const freshness_fixture& f, int status, std::time_t this_update,
                     std::time_t next_update) {
  return mtlsd::test::ocsp_response(f.ca, f.leaf, status, this_update, next_update);
}

std::string good_response(const freshness_fixture& f, std::time_t this_update,
                          std::time_t next_update) {
  return response(f, V_OCSP_CERTSTATUS_GOOD, this_update, next_update);
}

rev::ocsp_answer check(const freshness_fixture& f, const std::string& der, std::time_t now) {
  return rev::check_ocsp_response(der, f.leaf.cert(), f.ca.cert(), nullptr, now);
}

TEST(OcspFreshness, WithoutNextUpdateAResponseIsTakenOnlyWhileRecent) {
  freshness_fixture f;
  const std::time_t now = mtlsd::test::now();
  EXPECT_EQ(check(f, good_response(f, now - 60, 0), now).result, rev::status::good);
  EXPECT_EQ(
      check(f, good_response(f, now - rev::ocsp_max_age_without_next_update + 5, 0), now).result,
      rev::status::good);
  // A revoked certificate's "good" answer from a month ago, replayed or stapled: it proves
  // nothing about now (review: it was taken at any age).
  const auto old = check(f, good_response(f, now - days(30), 0), now);
  EXPECT_EQ(old.result, rev::status::unavailable);
  EXPECT_EQ(old.detail, "response is stale (no nextUpdate, and thisUpdate is 43200 minutes old)");
}

TEST(OcspFreshness, WithNextUpdateItsWindowDecides) {
  freshness_fixture f;
  const std::time_t now = mtlsd::test::now();
  EXPECT_EQ(check(f, good_response(f, now - days(2), now + days(1)), now).result,
            rev::status::good);
  EXPECT_EQ(check(f, good_response(f, now - days(2), now - days(1)), now).detail,
            "response is stale (nextUpdate has passed)");
  EXPECT_EQ(check(f, good_response(f, now + days(1), 0), now).detail,
            "response is not yet valid (thisUpdate in the future)");
}

}  // namespace

namespace {

// Review: a signed "revoked" past its nextUpdate (or old, without one) was taken as no answer,
// and under on_unavailable: allow a known-revoked certificate was admitted.
TEST(OcspFreshness, ARevocationIsTakenWhateverItsAge) {
  freshness_fixture f;
  const std::time_t now = mtlsd::test::now();
  const auto stale =
      check(f, response(f, V_OCSP_CERTSTATUS_REVOKED, now - days(2), now - days(1)), now);
  EXPECT_EQ(stale.result, rev::status::revoked);
  EXPECT_EQ(stale.detail, "keyCompromise");
  EXPECT_EQ(check(f, response(f, V_OCSP_CERTSTATUS_REVOKED, now - days(30), 0), now).result,
            rev::status::revoked);
}

}  // namespace

namespace {

// Review: a window ending before it begins was taken while both ends were within the skew of
// now; OpenSSL's OCSP_check_validity refuses it.
TEST(OcspFreshness, ANextUpdateBeforeItsThisUpdateIsRefused) {
  freshness_fixture f;
  const std::time_t now = mtlsd::test::now();
  const auto backwards = check(f, good_response(f, now, now - 60), now);
  EXPECT_EQ(backwards.result, rev::status::unavailable);
  EXPECT_EQ(backwards.detail, "response's nextUpdate is before its thisUpdate");
  // One second of window is a window.
  EXPECT_EQ(check(f, good_response(f, now - 1, now), now).result, rev::status::good);
}

// Review: d2i ignores what follows the DER, and the stapler served such a body as received,
// which strict clients refuse.
TEST(OcspFreshness, BytesAfterTheResponseMakeItNoResponse) {
  freshness_fixture f;
  const std::time_t now = mtlsd::test::now();
  const std::string der = good_response(f, now - 60, now + 3600);
  ASSERT_EQ(check(f, der, now).result, rev::status::good);
  const auto trailing = check(f, der + "\r\n<!-- cached by proxy -->\r\n", now);
  EXPECT_EQ(trailing.result, rev::status::unavailable);
  EXPECT_EQ(trailing.detail, "not an OCSP response: 28 bytes follow its DER");
}

}  // namespace
