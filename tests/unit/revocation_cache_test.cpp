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

// The recheck after a reload closes what the handshake would refuse. Review: a delta CRL lifting
// a base CRL's certificateHold (removeFromCRL) was ignored, and the released peer closed. But
// OpenSSL applies a delta only where the base names it (Freshest CRL) and the delta follows
// that base: elsewhere the hold stands in handshakes, and the recheck keeps it too (a second
// review: lifting it regardless left a peer new handshakes refuse connected).
TEST(RevocationEvent, CrlFilesWithADeltaRevokeWhatTheHandshakeRefuses) {
  const auto ca = test::make_root_ca({.cn = "Delta Root"});
  const std::time_t at = test::now() - 600;
  const auto serials_of = [&](const std::string& freshest) {
    std::vector<x509_crl_ptr> files;
    files.push_back(x509_crl_ptr(
        test::make_crl(ca, {.revoked = {{10, at, CRL_REASON_CERTIFICATE_HOLD}, {11, at}},
                            .crl_number = 20,
                            .freshest_crl = freshest})));
    files.push_back(x509_crl_ptr(
        test::make_crl(ca, {.revoked = {{10, at, CRL_REASON_REMOVE_FROM_CRL}, {12, at}},
                            .crl_number = 21,
                            .delta_of = 20})));
    files.push_back(x509_crl_ptr(  // an older delta: still counted, the safe side
        test::make_crl(ca, {.revoked = {{13, at}}, .crl_number = 19, .delta_of = 18})));
    const auto events = events_from_crl_files(files, "inbound");
    return events.size() == 1 ? events[0]->serials : std::vector<std::string>{"(no event)"};
  };
  const auto serials = [](std::initializer_list<std::uint64_t> ns) {
    std::vector<std::string> out;
    for (const auto n : ns) {
      ASN1_INTEGER* i = ASN1_INTEGER_new();
      ASN1_INTEGER_set_uint64(i, n);
      out.push_back(serial_der(i));
      ASN1_INTEGER_free(i);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(serials_of("http://crl.example/delta.crl"), serials({11, 12, 13}));  // 10 released
  EXPECT_EQ(serials_of(""), serials({10, 11, 12, 13}));  // OpenSSL ignores the delta: held
}

}  // namespace
}  // namespace mtlsd::tls::revocation
