// proxy::session_control's revocation watch across the session's own revocation check: a
// revocation learnt while the check runs is kept for its end (review: the watch was registered
// only after the check, and such a revocation was lost for the session).
#include <gtest/gtest.h>

#include <string>

#include "mtlsd/proxy/session_registry.hpp"

namespace mtlsd::proxy {
namespace {

namespace watch_rev = tls::revocation;

const std::string watched_listener = "in";

watch_rev::revocation_event revoking_event(const std::string& serial,
                                           std::string source = "crl http://x") {
  watch_rev::revocation_event e;
  e.issuer = "issuer";
  e.serials = {serial};
  e.source = std::move(source);
  return e;
}

// A session of `listener` whose peer's chain is leaf (serial 01) and CA (serial 02), the issuer
// keys not known: the events here, of no key either, match them by name (event.hpp).
void watch_leaf_and_ca(session_control& s, bool checking) {
  s.watch_revocation(&watched_listener, {{"issuer", {}, "\x01"}, {"issuer", {}, "\x02"}}, checking);
}

TEST(SessionRevocationWatch, ARevocationLearntDuringTheCheckRefusesWhatTheCheckAdmits) {
  session_control s;
  watch_leaf_and_ca(s, true);
  EXPECT_FALSE(s.revoke_if(revoking_event("\x02")));                   // kept, not acted on
  EXPECT_FALSE(s.revoke_if(revoking_event("\x01", "ocsp http://y")));  // the first one names it
  EXPECT_FALSE(s.killed());
  EXPECT_EQ(s.revocation_checked(true),
            "certificate at depth 1 revoked while its revocation check ran (crl http://x)");
  // Refused: nothing left to watch.
  EXPECT_FALSE(s.revoke_if(revoking_event("\x01")));
  EXPECT_FALSE(s.killed());
}

TEST(SessionRevocationWatch, ACheckThatRefusesKeepsItsOwnVerdictAndEndsTheWatch) {
  session_control s;
  watch_leaf_and_ca(s, true);
  EXPECT_FALSE(s.revoke_if(revoking_event("\x01")));  // e.g. the check's own OCSP answer
  EXPECT_EQ(s.revocation_checked(false), std::nullopt);
  EXPECT_FALSE(s.revoke_if(revoking_event("\x01")));
  EXPECT_FALSE(s.killed());
}

TEST(SessionRevocationWatch, AfterAnAdmittingCheckARevocationClosesTheSession) {
  session_control s;
  watch_leaf_and_ca(s, true);
  EXPECT_FALSE(s.revoke_if(revoking_event("\x03")));  // another peer's
  EXPECT_EQ(s.revocation_checked(true), std::nullopt);
  EXPECT_TRUE(s.revoke_if(revoking_event("\x01")));
  EXPECT_TRUE(s.killed());
  EXPECT_EQ(s.kill_reason(), reason::revoked);
  EXPECT_EQ(s.kill_detail(), "certificate at depth 0 revoked while connected (crl http://x)");
}

TEST(SessionRevocationWatch, WithoutACheckARevocationClosesTheSessionAtOnce) {
  session_control s;
  watch_leaf_and_ca(s, false);
  EXPECT_TRUE(s.revoke_if(revoking_event("\x02")));
  EXPECT_TRUE(s.killed());
}

}  // namespace
}  // namespace mtlsd::proxy
