// When a distribution point's CRL is downloaded again (crl_refresh_time, tls/revocation/crl.hpp).
#include <gtest/gtest.h>

#include "mtlsd/tls/revocation/crl.hpp"

namespace {

using mtlsd::tls::revocation::crl_refresh_time;
constexpr std::time_t hour = 3600, day = 24 * hour;

TEST(CrlRefresh, AQuarterOfTheValidityAheadOfNextUpdateAtMostTheLongestLead) {
  const std::time_t t0 = 1'000'000;
  EXPECT_EQ(crl_refresh_time(t0, t0 + 4 * hour, t0, hour), t0 + 3 * hour);
  EXPECT_EQ(crl_refresh_time(t0, t0 + 7 * day, t0, hour), t0 + 7 * day - hour);
  EXPECT_EQ(crl_refresh_time(t0, 0, t0, hour), t0 + hour);  // no nextUpdate
}

// Inside the window a point that still serves the same CRL (it publishes the next one only at
// nextUpdate) is asked again a minute later at the soonest, not every second (review: one GET a
// second for the last hour of every CRL; 8 MB/s for a 10 MB CRL).
TEST(CrlRefresh, InsideTheWindowNoSoonerThanAnEighthOfItAtMostAMinute) {
  const std::time_t t0 = 1'000'000, next = t0 + 7 * day;
  EXPECT_EQ(crl_refresh_time(t0, next, next - 30 * 60, hour), next - 30 * 60 + 60);
  EXPECT_EQ(crl_refresh_time(t0, next, next - 1, hour), next - 1 + 60);
  // A CRL valid 4 minutes (lead 60 s): every 7 s inside its last minute.
  EXPECT_EQ(crl_refresh_time(t0, t0 + 240, t0 + 200, hour), t0 + 207);
}

}  // namespace
