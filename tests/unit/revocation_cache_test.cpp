// The revocation service's bounded caches, and the pieces of it that need no network.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mtlsd/tls/revocation/cache.hpp"
#include "mtlsd/tls/revocation/crl.hpp"
#include "mtlsd/tls/revocation/event.hpp"
#include "test_pki.hpp"

namespace mtlsd::tls::revocation {
namespace {

TEST(RevocationCache, EvictsLeastRecentlyUsedByCount) {
  lru_cache<std::string, int> c(2, 0);
  c.put("a", 1);
  c.put("b", 2);
  ASSERT_NE(c.find("a"), nullptr);  // a is now the most recent
  c.put("c", 3);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.peek("b"), nullptr);
  EXPECT_NE(c.peek("a"), nullptr);
  EXPECT_NE(c.peek("c"), nullptr);
}

TEST(RevocationCache, EvictsByBytesAndRefusesOversizedEntries) {
  lru_cache<std::string, std::string> c(10, 10, [](const std::string& v) { return v.size(); });
  std::string evicted;
  c.on_evict([&](const std::string& k, std::string&) { evicted += k; });
  c.put("a", "12345");
  c.put("b", "12345");
  EXPECT_EQ(c.bytes(), 10u);
  c.put("c", "123");
  EXPECT_EQ(evicted, "a");
  EXPECT_EQ(c.bytes(), 8u);
  EXPECT_EQ(c.put("big", std::string(11, 'x')), nullptr);
  EXPECT_EQ(c.peek("big"), nullptr);
}

TEST(RevocationCache, ReplacingKeepsTheByteCountRight) {
  lru_cache<std::string, std::string> c(10, 100, [](const std::string& v) { return v.size(); });
  c.put("a", "123");
  c.put("a", "12345");
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.bytes(), 5u);
  c.erase("a");
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(RevocationEvent, MatchesIssuerAndSerial) {
  revocation_event e;
  e.issuer = "issuer-A";
  e.serials = {"\x10\x01", "\x10\x05"};
  std::vector<peer_cert_id> chain = {{"issuer-A", "\x10\x02"}, {"root", "\x01"}};
  EXPECT_EQ(revoked_depth(e, chain), -1);
  chain[0].serial = "\x10\x05";
  EXPECT_EQ(revoked_depth(e, chain), 0);
  chain[0].issuer = "issuer-B";  // same serial, another CA: not this one
  EXPECT_EQ(revoked_depth(e, chain), -1);
}

// Review: a delta CRL lifting a base CRL's certificateHold (removeFromCRL) was ignored by the
// reload's recheck, which then closed the peer the handshake (judging with the delta) admitted.
TEST(RevocationEvent, CrlFilesWithADeltaRevokeWhatTheNewestDeltaLeaves) {
  const auto ca = test::make_root_ca({.cn = "Delta Root"});
  const std::time_t at = test::now() - 600;
  const auto crl = [&](std::vector<test::revoked_entry> revoked, std::uint64_t number,
                       std::optional<std::uint64_t> delta_of = {}) {
    return x509_crl_ptr(test::make_crl(
        ca, {.revoked = std::move(revoked), .crl_number = number, .delta_of = delta_of}));
  };
  std::vector<x509_crl_ptr> files;
  files.push_back(crl({{10, at, CRL_REASON_CERTIFICATE_HOLD}, {11, at}}, 20));
  files.push_back(crl({{10, at, CRL_REASON_REMOVE_FROM_CRL}, {12, at}}, 21, 20));
  files.push_back(crl({{13, at}}, 19, 18));  // an older delta: superseded
  const auto events = events_from_crl_files(files, "inbound");
  ASSERT_EQ(events.size(), 1u);
  const auto serial = [](std::uint64_t n) {
    ASN1_INTEGER* i = ASN1_INTEGER_new();
    ASN1_INTEGER_set_uint64(i, n);
    std::string der = serial_der(i);
    ASN1_INTEGER_free(i);
    return der;
  };
  std::vector<std::string> want = {serial(11), serial(12)};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(events[0]->serials, want);  // 10 released, 13's delta superseded
}

}  // namespace
}  // namespace mtlsd::tls::revocation
