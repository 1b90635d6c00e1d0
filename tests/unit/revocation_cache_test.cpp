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

TEST(RevocationEvent, MatchesIssuerNameKeyAndSerial) {
  const key_hash key_a{1}, key_b{2};
  revocation_event e;
  e.issuer = "issuer-A";
  e.issuer_key = key_a;
  e.serials = {"\x10\x01", "\x10\x05"};
  std::vector<peer_cert_id> chain = {{"issuer-A", key_a, "\x10\x02"}, {"root", key_b, "\x01"}};
  EXPECT_EQ(revoked_depth(e, chain), -1);
  chain[0].serial = "\x10\x05";
  EXPECT_EQ(revoked_depth(e, chain), 0);
  chain[0].issuer = "issuer-B";  // same serial, another CA: not this one
  EXPECT_EQ(revoked_depth(e, chain), -1);
  chain[0].issuer = "issuer-A";
  chain[0].issuer_key = key_b;  // same name and serial, another key (review): not this one
  EXPECT_EQ(revoked_depth(e, chain), -1);
  chain[0].issuer_key = {};  // the key is not known: a name is not enough
  EXPECT_EQ(revoked_depth(e, chain), -1);
  e.issuer_key = {};  // nor the event's (a CRL file no trusted CA signed): the name is
  EXPECT_EQ(revoked_depth(e, chain), 0);
}

// Two CAs with one name (staging's CA made by the same script, or a CA re-keyed under its name)
// issue the same serial: the ids of their chains differ by the issuer's key alone.
TEST(RevocationEvent, ChainIdsTellTwoCasOfOneNameApart) {
  const auto ca1 = test::make_root_ca({.cn = "Twin CA"});
  const auto ca2 = test::make_root_ca({.cn = "Twin CA"});
  const auto leaf1 = test::make_leaf(ca1, {.cn = "svc-one", .serial = 4096});
  const auto leaf2 = test::make_leaf(ca2, {.cn = "svc-two", .serial = 4096});
  const auto ids1 = peer_cert_ids({leaf1.cert(), ca1.cert()});
  const auto ids2 = peer_cert_ids({leaf2.cert(), ca2.cert()});
  ASSERT_EQ(ids1.size(), 2u);
  ASSERT_EQ(ids2.size(), 2u);
  EXPECT_EQ(ids1[0].issuer, ids2[0].issuer);
  EXPECT_EQ(ids1[0].serial, ids2[0].serial);
  EXPECT_EQ(ids1[0].issuer_key, key_hash_of(ca1.cert()));
  EXPECT_EQ(ids2[0].issuer_key, key_hash_of(ca2.cert()));
  EXPECT_NE(ids1[0].issuer_key, ids2[0].issuer_key);
  EXPECT_EQ(ids1[1].issuer_key, key_hash_of(ca1.cert()));  // a self-signed anchor: its own key

  revocation_event e;  // as the OCSP answer about leaf1 makes it
  e.issuer = ids1[0].issuer;
  e.issuer_key = key_hash_of(ca1.cert());
  e.serials = {ids1[0].serial};
  EXPECT_EQ(revoked_depth(e, ids1), 0);
  EXPECT_EQ(revoked_depth(e, ids2), -1);

  // An anchor that is not self-signed (an issuing CA trusted alone): its issuer is not known.
  const auto mid = test::make_intermediate(ca1, {.cn = "Issuing CA"});
  const auto leaf3 = test::make_leaf(mid, {.cn = "svc-three"});
  const auto ids3 = peer_cert_ids({leaf3.cert(), mid.cert()});
  ASSERT_EQ(ids3.size(), 2u);
  EXPECT_EQ(ids3[0].issuer_key, key_hash_of(mid.cert()));
  EXPECT_EQ(ids3[1].issuer_key, key_hash{});
}

// A reload's CRL files: each CRL is its signer's (the trusted CA its signature verifies with), so
// that the CRL of one CA does not close the peers of another with its name (review).
TEST(RevocationEvent, CrlFilesAreTheirSignersByKey) {
  const auto ca1 = test::make_root_ca({.cn = "Twin CA"});
  const auto ca2 = test::make_root_ca({.cn = "Twin CA"});
  const std::time_t at = test::now() - 600;
  std::vector<x509_crl_ptr> files;
  files.push_back(x509_crl_ptr(test::make_crl(ca1, {.revoked = {{4096, at}}})));
  files.push_back(x509_crl_ptr(test::make_crl(ca2, {.revoked = {{7, at}}})));
  const auto leaf1 = test::make_leaf(ca1, {.cn = "svc-one", .serial = 4096});
  const auto leaf2 = test::make_leaf(ca2, {.cn = "svc-two", .serial = 4096});
  const auto ids1 = peer_cert_ids({leaf1.cert(), ca1.cert()});
  const auto ids2 = peer_cert_ids({leaf2.cert(), ca2.cert()});
  const auto closes = [&](const std::vector<event_ptr>& events, const auto& ids) {
    return std::any_of(events.begin(), events.end(),
                       [&](const event_ptr& e) { return revoked_depth(*e, ids) >= 0; });
  };

  const auto keyed = events_from_crl_files(files, {ca2.cert(), ca1.cert()}, "inbound");
  ASSERT_EQ(keyed.size(), 2u);
  EXPECT_TRUE(closes(keyed, ids1));
  EXPECT_FALSE(closes(keyed, ids2));

  // Signed by no CA given (an intermediate the peers send): by name, on the safe side.
  const auto by_name = events_from_crl_files(files, {}, "inbound");
  ASSERT_EQ(by_name.size(), 1u);
  EXPECT_EQ(by_name[0]->issuer_key, key_hash{});
  EXPECT_TRUE(closes(by_name, ids1));
  EXPECT_TRUE(closes(by_name, ids2));

  // An indirect CRL is skipped, as the handshake skips it.
  std::vector<x509_crl_ptr> indirect;
  indirect.push_back(
      x509_crl_ptr(test::make_crl(ca1, {.revoked = {{4096, at}},
                                        .issuing_distribution_point = "http://crl.example/all.crl",
                                        .indirect = true})));
  EXPECT_TRUE(indirect_crl(indirect[0].get()));
  EXPECT_FALSE(indirect_crl(files[0].get()));
  EXPECT_TRUE(events_from_crl_files(indirect, {ca1.cert()}, "inbound").empty());
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
    const auto events = events_from_crl_files(files, {ca.cert()}, "inbound");
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
