// The session-ticket key schedule: a key issues tickets for one period and decrypts them until it
// is two periods old; rotation happens when a ticket is issued, and only the key before the
// current one is kept.
#include "mtlsd/tls/ticket_key_ring.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <new>

namespace mtlsd::tls {
namespace {

using namespace std::chrono_literals;
using name_t = std::array<unsigned char, 16>;

class TicketKeyRing : public ::testing::Test {
 protected:
  name_t issue(std::chrono::seconds at) {
    ticket_key_copy copy;
    ring_.for_issuing(t0_ + at, copy);
    EXPECT_TRUE(copy.key.has_value());
    return copy.key ? copy.key->name : name_t{};
  }
  bool decrypts(const name_t& name, std::chrono::seconds at) {
    ticket_key_copy copy;
    ring_.for_decrypting(name.data(), t0_ + at, copy);
    if (copy.key) {
      EXPECT_EQ(copy.key->name, name);
    }
    return copy.key.has_value();
  }

  static constexpr std::chrono::seconds period{3600};
  ticket_key_ring ring_{period};
  const ticket_key_ring::time_point t0_ = std::chrono::steady_clock::now();
};

TEST_F(TicketKeyRing, OneKeyIssuesForAPeriod) {
  const name_t a = issue(0s);
  EXPECT_EQ(issue(1s), a);
  EXPECT_EQ(issue(period - 1s), a);
  EXPECT_NE(issue(period), a);
}

TEST_F(TicketKeyRing, TheKeysMaterialIsTheSameForIssuingAndDecrypting) {
  ticket_key_copy issued, found;
  ring_.for_issuing(t0_, issued);
  ring_.for_decrypting(issued.key->name.data(), t0_ + 10s, found);
  ASSERT_TRUE(found.key.has_value());
  EXPECT_EQ(found.key->aes, issued.key->aes);
  EXPECT_EQ(found.key->hmac, issued.key->hmac);
  EXPECT_NE(issued.key->aes, issued.key->hmac);
}

TEST_F(TicketKeyRing, ThePreviousKeyDecryptsUntilItIsTwoPeriodsOld) {
  const name_t a = issue(0s);
  const name_t b = issue(period);  // rotation: a becomes the previous key
  ASSERT_NE(a, b);
  EXPECT_TRUE(decrypts(a, period));
  EXPECT_TRUE(decrypts(a, 2 * period - 1s));
  EXPECT_FALSE(decrypts(a, 2 * period));
  EXPECT_TRUE(decrypts(b, 2 * period));
}

TEST_F(TicketKeyRing, OnlyOnePreviousKeyIsKept) {
  const name_t a = issue(0s);
  const name_t b = issue(period);
  const name_t c = issue(2 * period);  // b is a period old: rotate again
  ASSERT_NE(b, c);
  EXPECT_FALSE(decrypts(a, 2 * period - 1s));  // gone, though younger than two periods
  EXPECT_TRUE(decrypts(b, 2 * period));
  EXPECT_TRUE(decrypts(c, 2 * period));
}

TEST_F(TicketKeyRing, WithoutTicketsIssuedTheCurrentKeyStillExpires) {
  // Rotation is lazy: nothing rotates while no ticket is issued, yet a ticket of a key two
  // periods old is refused (a full handshake), and the next ticket comes from a new key.
  const name_t a = issue(0s);
  EXPECT_TRUE(decrypts(a, 2 * period - 1s));
  EXPECT_FALSE(decrypts(a, 5 * period));
  const name_t b = issue(5 * period);
  EXPECT_NE(b, a);
  EXPECT_FALSE(decrypts(a, 5 * period));  // the previous key now, but far too old
}

TEST_F(TicketKeyRing, AnUnknownNameDecryptsNothing) {
  issue(0s);
  EXPECT_FALSE(decrypts(name_t{}, 1s));
  name_t other{};
  other.fill(0xab);
  EXPECT_FALSE(decrypts(other, 1s));
}

TEST(TicketKeyRingEmpty, DecryptsNothingBeforeTheFirstTicket) {
  ticket_key_ring ring(std::chrono::seconds(60));
  ticket_key_copy copy;
  const name_t zero{};
  ring.for_decrypting(zero.data(), std::chrono::steady_clock::now(), copy);
  EXPECT_FALSE(copy.key.has_value());
}

TEST(TicketKeyCopy, IsWipedWhenItGoes) {
  // The copy's storage is cleansed before the optional lets it go: look at it through a
  // placement into a zeroed buffer the test owns.
  alignas(ticket_key_copy) unsigned char storage[sizeof(ticket_key_copy)]{};
  auto* copy = new (storage) ticket_key_copy;
  ticket_key_ring ring(std::chrono::seconds(60));
  ring.for_issuing(std::chrono::steady_clock::now(), *copy);
  ASSERT_TRUE(copy->key.has_value());
  const auto aes = copy->key->aes;
  ASSERT_NE(aes, decltype(aes){});
  copy->~ticket_key_copy();
  for (unsigned char byte : storage)
    EXPECT_EQ(byte, 0) << "key material left behind";
}

}  // namespace
}  // namespace mtlsd::tls
