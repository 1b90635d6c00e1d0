// Admission limits and CIDR ranges: the token bucket's rate and burst, per-source and
// per-identity counts (entries gone at zero), the pending cap and its default, and the order of
// checks.
#include "mtlsd/proxy/admission.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "mtlsd/config/cidr.hpp"

namespace mtlsd::proxy {
namespace {

using namespace std::chrono_literals;
using config::ip_address;
using config::parse_cidr;
using config::parse_ip;

config::cidr must_cidr(const char* text) {
  auto r = parse_cidr(text);
  EXPECT_TRUE(std::holds_alternative<config::cidr>(r)) << text;
  return std::get<config::cidr>(r);
}

TEST(Cidr, MatchesByPrefix) {
  const auto net = must_cidr("10.0.0.0/8");
  EXPECT_TRUE(net.contains(*parse_ip("10.255.1.2")));
  EXPECT_FALSE(net.contains(*parse_ip("11.0.0.1")));
  EXPECT_FALSE(net.contains(*parse_ip("::a00:1")));  // another family
  const auto odd = must_cidr("192.168.0.0/23");
  EXPECT_TRUE(odd.contains(*parse_ip("192.168.1.255")));
  EXPECT_FALSE(odd.contains(*parse_ip("192.168.2.0")));
  const auto v6 = must_cidr("2001:db8::/33");
  EXPECT_TRUE(v6.contains(*parse_ip("2001:db8:7fff::1")));
  EXPECT_FALSE(v6.contains(*parse_ip("2001:db8:8000::1")));
  EXPECT_TRUE(must_cidr("0.0.0.0/0").contains(*parse_ip("203.0.113.1")));
  EXPECT_TRUE(must_cidr("::/0").contains(*parse_ip("2001:db8::1")));
  // One address is a /32 or /128.
  EXPECT_EQ(must_cidr("192.0.2.7").str(), "192.0.2.7/32");
  EXPECT_EQ(must_cidr("[::1]").str(), "::1/128");
}

TEST(Cidr, V4MappedAddressesCountAsV4) {
  const auto a = parse_ip("::ffff:10.1.2.3");
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->v6);
  EXPECT_TRUE(must_cidr("10.0.0.0/8").contains(*a));
}

TEST(Cidr, BadRangesSayWhy) {
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.0.0/8", "example.org/8",
                          "::/129", "", "10.0.0.0/-1"})
    EXPECT_TRUE(std::holds_alternative<std::string>(parse_cidr(bad))) << bad;
  auto host_bits = parse_cidr("10.1.2.3/8");
  ASSERT_TRUE(std::holds_alternative<std::string>(host_bits));
  EXPECT_NE(std::get<std::string>(host_bits).find("10.0.0.0/8"), std::string::npos);
}

TEST(TokenBucket, BurstThenRate) {
  admission_state st;
  config::limit_options l;
  l.connections_per_second = 10;
  l.burst = 5;
  const auto t0 = std::chrono::steady_clock::time_point(1000s);
  int taken = 0;
  for (int i = 0; i < 20; ++i)
    taken += st.take_token(l, t0) ? 1 : 0;
  EXPECT_EQ(taken, 5);  // the burst, at once
  EXPECT_FALSE(st.take_token(l, t0 + 50ms));
  EXPECT_TRUE(st.take_token(l, t0 + 100ms));  // one token per 100 ms
  EXPECT_FALSE(st.take_token(l, t0 + 150ms));
  // Idle for long: the bucket refills to the burst, no more.
  taken = 0;
  for (int i = 0; i < 20; ++i)
    taken += st.take_token(l, t0 + 10s) ? 1 : 0;
  EXPECT_EQ(taken, 5);
}

TEST(TokenBucket, ARaisedRateAppliesAtOnceToABucketEmptiedBefore) {
  admission_state st;
  config::limit_options slow;
  slow.connections_per_second = 1;
  slow.burst = 30;
  const auto t0 = std::chrono::steady_clock::time_point(1000s);
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(st.take_token(slow, t0));
  EXPECT_FALSE(st.take_token(slow, t0));
  // A reload raises the limit (the bucket carries over): empty now, one token per 1 ms from now,
  // not refused until the old settings' 30 s were over.
  config::limit_options fast;
  fast.connections_per_second = 1000;
  fast.burst = 1000;
  EXPECT_FALSE(st.take_token(fast, t0 + 2ms));
  EXPECT_TRUE(st.take_token(fast, t0 + 3ms));
  EXPECT_FALSE(st.take_token(fast, t0 + 3ms));
  int taken = 0;
  for (int i = 0; i < 2000; ++i)
    taken += st.take_token(fast, t0 + 2s) ? 1 : 0;
  EXPECT_EQ(taken, 1000);  // refilled to the new burst
}

TEST(TokenBucket, BurstDefaultsToTheRateAndZeroIsUnlimited) {
  admission_state st;
  config::limit_options l;
  const auto t0 = std::chrono::steady_clock::time_point(1000s);
  for (int i = 0; i < 1000; ++i)
    ASSERT_TRUE(st.take_token(l, t0));
  l.connections_per_second = 3;
  admission_state st2;
  int taken = 0;
  for (int i = 0; i < 10; ++i)
    taken += st2.take_token(l, t0) ? 1 : 0;
  EXPECT_EQ(taken, 3);
}

TEST(TokenBucket, SharedByThreadsExactly) {
  // Several workers take from one bucket: together they get the burst, no more.
  admission_state st;
  config::limit_options l;
  l.connections_per_second = 1;
  l.burst = 1000;
  const auto t0 = std::chrono::steady_clock::time_point(1000s);
  std::atomic<int> taken{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (st.take_token(l, t0)) ++taken;
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(taken.load(), 1000);
}

config::listener limited() {
  config::listener cfg;
  cfg.max_connections = 100;
  return cfg;
}

TEST(Admission, AllowedSources) {
  auto st = std::make_shared<admission_state>();
  auto cfg = limited();
  cfg.allowed_sources = {must_cidr("10.0.0.0/8")};
  admission_ticket in(st), out(st), unix_peer(st);
  EXPECT_FALSE(in.admit_source(cfg, parse_ip("10.9.9.9")));
  auto r = out.admit_source(cfg, parse_ip("192.0.2.1"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->why, reason::source_not_allowed);
  EXPECT_NE(r->detail.find("192.0.2.1"), std::string::npos);
  auto u = unix_peer.admit_source(cfg, std::nullopt);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->why, reason::source_not_allowed);
  EXPECT_EQ(st->pending(), 1);  // only the admitted one holds a place
}

TEST(Admission, PerSourceCountsFreeTheirEntriesAtZero) {
  auto st = std::make_shared<admission_state>();
  auto cfg = limited();
  cfg.limits.max_connections_per_source = 2;
  {
    std::vector<admission_ticket> held;
    for (int i = 0; i < 2; ++i) {
      held.emplace_back(st);
      EXPECT_FALSE(held.back().admit_source(cfg, parse_ip("192.0.2.1")));
    }
    admission_ticket third(st);
    auto r = third.admit_source(cfg, parse_ip("192.0.2.1"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->why, reason::rate_limited);
    admission_ticket other(st);  // another source is not affected
    EXPECT_FALSE(other.admit_source(cfg, parse_ip("192.0.2.2")));
    EXPECT_EQ(st->sources_tracked(), 2u);
  }
  EXPECT_EQ(st->sources_tracked(), 0u);
  EXPECT_EQ(st->pending(), 0);
}

TEST(Admission, PendingCapAndItsDefault) {
  auto cfg = limited();
  EXPECT_EQ(cfg.limits.pending_cap(10000), 5000);
  EXPECT_EQ(cfg.limits.pending_cap(100), 64);  // the floor
  EXPECT_EQ(cfg.limits.pending_cap(2), 2);     // never above max_connections
  EXPECT_EQ(cfg.limits.pending_cap(1), 1);
  cfg.limits.max_pending_handshakes = 2;
  auto st = std::make_shared<admission_state>();
  admission_ticket a(st), b(st), c(st);
  EXPECT_FALSE(a.admit_source(cfg, parse_ip("192.0.2.1")));
  EXPECT_FALSE(b.admit_source(cfg, parse_ip("192.0.2.1")));
  auto r = c.admit_source(cfg, parse_ip("192.0.2.1"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->why, reason::over_capacity);
  a.end_handshake();  // past its handshake: the place is free for another
  admission_ticket d(st);
  EXPECT_FALSE(d.admit_source(cfg, parse_ip("192.0.2.1")));
  EXPECT_EQ(st->pending(), 2);
}

TEST(Admission, RateLimitComesBeforeThePendingCap) {
  auto cfg = limited();
  cfg.limits.connections_per_second = 1;
  cfg.limits.burst = 1;
  auto st = std::make_shared<admission_state>();
  admission_ticket a(st), b(st);
  EXPECT_FALSE(a.admit_source(cfg, parse_ip("192.0.2.1")));
  auto r = b.admit_source(cfg, parse_ip("192.0.2.1"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->why, reason::rate_limited);
  EXPECT_NE(r->detail.find("connections_per_second"), std::string::npos);
}

TEST(Admission, PerIdentity) {
  auto cfg = limited();
  cfg.limits.max_connections_per_identity = 1;
  auto st = std::make_shared<admission_state>();
  {
    admission_ticket a(st), b(st), c(st);
    EXPECT_FALSE(a.admit_identity(cfg, "spiffe://td/a"));
    auto r = b.admit_identity(cfg, "spiffe://td/a");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->why, reason::rate_limited);
    EXPECT_NE(r->detail.find("spiffe://td/a"), std::string::npos);
    EXPECT_FALSE(c.admit_identity(cfg, "spiffe://td/b"));
    EXPECT_EQ(st->identities_tracked(), 2u);
    admission_ticket moved(std::move(a));  // a move hands the place over, not doubles it
    EXPECT_EQ(st->identities_tracked(), 2u);
  }
  EXPECT_EQ(st->identities_tracked(), 0u);
}

}  // namespace
}  // namespace mtlsd::proxy
