// When the background OCSP refresh asks a responder again (ocsp_refresh_due,
// tls/revocation/ocsp.hpp). The integration tests (test_ocsp_refresh_bounds.py) show the loop
// asking; the day-long bounds here would need a daemon clock a day ahead.
#include <gtest/gtest.h>

#include "mtlsd/tls/revocation/ocsp.hpp"

namespace {

namespace rev = mtlsd::tls::revocation;
constexpr std::time_t t0 = 1'000'000'000, hour = 3600, day = 24 * hour;

// Watched, seen a minute ago, its certificate valid a year more, its answer lapsed a second ago.
rev::ocsp_refresh_facts lapsed() {
  return {.watched = true,
          .last_used = t0 - 60,
          .not_after = t0 + 365 * day,
          .lasting_revocation = false,
          .fresh_until = t0 - 1,
          .retry_at = 0};
}

TEST(OcspRefreshDue, ALapsedAnswerOfACertificateSeenLatelyIsAskedForAtOnce) {
  const auto due = rev::ocsp_refresh_due(lapsed(), t0);
  ASSERT_TRUE(due.has_value());
  EXPECT_LE(*due, t0);
}

TEST(OcspRefreshDue, AFreshAnswerIsAskedForWhenItLapses) {
  auto f = lapsed();
  f.fresh_until = t0 + hour;
  EXPECT_EQ(rev::ocsp_refresh_due(f, t0), t0 + hour);
}

TEST(OcspRefreshDue, AFailedRefreshWaitsOutItsBackoff) {
  auto f = lapsed();
  f.retry_at = t0 + 8;
  EXPECT_EQ(rev::ocsp_refresh_due(f, t0), t0 + 8);
}

TEST(OcspRefreshDue, ACertificateUnseenForADayIsNoLongerAskedAbout) {
  auto f = lapsed();
  f.last_used = t0 - day;
  EXPECT_TRUE(rev::ocsp_refresh_due(f, t0).has_value()) << "seen exactly a day ago";
  f.last_used = t0 - day - 1;
  EXPECT_FALSE(rev::ocsp_refresh_due(f, t0).has_value());
  // A fresh answer whose certificate goes unseen is not looked at again either.
  f.fresh_until = t0 + hour;
  EXPECT_FALSE(rev::ocsp_refresh_due(f, t0).has_value());
}

TEST(OcspRefreshDue, AnExpiredCertificateIsNoLongerAskedAbout) {
  auto f = lapsed();
  f.not_after = t0 + 1;
  EXPECT_TRUE(rev::ocsp_refresh_due(f, t0).has_value());
  f.not_after = t0;
  EXPECT_FALSE(rev::ocsp_refresh_due(f, t0).has_value());
}

TEST(OcspRefreshDue, OnlyWhatAListenerWatchesIsAskedAbout) {
  auto f = lapsed();
  f.watched = false;
  EXPECT_FALSE(rev::ocsp_refresh_due(f, t0).has_value());
}

TEST(OcspRefreshDue, ALastingRevocationIsNeverAskedAboutAgain) {
  auto f = lapsed();
  f.lasting_revocation = true;
  EXPECT_FALSE(rev::ocsp_refresh_due(f, t0).has_value());
}

}  // namespace
