// runtime::signing_health and tls::sign_probe: a listener whose key stopped signing reads not
// ready until the key signs again, and says so once per failure, not once per connection.
// (The token case, a SoftHSM token deleted under a running daemon, is in test_pkcs11.py.)
#include "mtlsd/runtime/signing_health.hpp"

#include <gtest/gtest.h>
#include <openssl/x509.h>

#include "mtlsd/tls/signing_probe.hpp"
#include "test_pki.hpp"

namespace mtlsd::runtime {
namespace {

// The public key of a certificate read back from DER (the test PKI's objects still hold the
// private half): a key that cannot sign, standing in for a token that will not.
// The public half of `key` alone (an EVP_PKEY_eq match of `key` that cannot sign).
tls::evp_pkey_ptr public_only_of(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  const unsigned char* p = der;
  tls::evp_pkey_ptr out(d2i_PUBKEY(nullptr, &p, n));
  OPENSSL_free(der);
  return out;
}

tls::evp_pkey_ptr public_only() {
  auto ca = test::make_root_ca({.cn = "public only"});
  const std::string der = test::to_der(ca.cert());
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  tls::x509_ptr read(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  return tls::evp_pkey_ptr(X509_get_pubkey(read.get()));
}

TEST(SignProbe, AKeySignsAndAPublicKeyDoesNot) {
  tls::evp_pkey_ptr ec(test::make_key());
  tls::evp_pkey_ptr rsa(test::make_key("RSA-2048"));
  EXPECT_EQ(tls::sign_probe(ec.get()), "");
  EXPECT_EQ(tls::sign_probe(rsa.get()), "");  // with PSS, as TLS 1.3 signs
  EXPECT_NE(tls::sign_probe(public_only().get()), "");
  EXPECT_EQ(tls::sign_probe(nullptr), "no private key");
}

TEST(SigningHealth, NotReadyFromTheFirstFailureUntilTheKeySignsAgain) {
  signing_health h(std::chrono::milliseconds(0));
  EXPECT_EQ(h.failure(), "");
  const auto cannot = public_only();
  EXPECT_FALSE(h.signed_ok(cannot.get()));  // nothing to recover from
  EXPECT_TRUE(h.failed(cannot.get(), "Object handle invalid"));
  EXPECT_FALSE(h.failed(cannot.get(), "Object handle invalid"));  // said once
  EXPECT_EQ(h.failure(), "Object handle invalid");  // asked again: still does not sign
  EXPECT_TRUE(h.signed_ok(cannot.get()));           // a handshake signed with it: the end
  EXPECT_EQ(h.failure(), "");
  EXPECT_FALSE(h.signed_ok(cannot.get()));
}

// Review: with a token RSA key and an ECDSA file key on one listener, every ECDSA handshake
// ended the RSA key's failure, and each next failure was logged again.
TEST(SigningHealth, AnotherKeySigningEndsNothing) {
  signing_health h(std::chrono::milliseconds(0));
  const auto failing = public_only();
  tls::evp_pkey_ptr other(test::make_key());
  EXPECT_TRUE(h.failed(failing.get(), "gone"));
  EXPECT_FALSE(h.signed_ok(other.get()));
  EXPECT_EQ(h.failure(), "gone");
  EXPECT_FALSE(h.failed(failing.get(), "gone"));  // not logged again
}

TEST(SigningHealth, AKeyThatSignsWhenAskedAgainEndsTheFailure) {
  signing_health h(std::chrono::milliseconds(0));
  tls::evp_pkey_ptr key(test::make_key());
  EXPECT_TRUE(h.failed(key.get(), "the token was busy"));
  EXPECT_EQ(h.failure(), "");  // /readyz asked the key itself: it signs now
  EXPECT_FALSE(h.signed_ok(key.get()));
  EXPECT_TRUE(h.failed(key.get(), "again"));  // a new failure is said again
}

// Review: a reload that dropped the failing key was held to it (503 for good); one that kept it
// but added another key forgot the failure.
TEST(SigningHealth, AReloadTakesOverTheFailureOnlyWhileItKeepsTheKey) {
  signing_health before(std::chrono::milliseconds(0));
  const auto failing = public_only();
  tls::evp_pkey_ptr other(test::make_key());
  EXPECT_TRUE(before.failed(failing.get(), "gone"));

  signing_health keeps(std::chrono::milliseconds(0));
  keeps.carry_from(before, {other.get(), failing.get()});
  EXPECT_EQ(keeps.failure(), "gone");
  EXPECT_FALSE(keeps.failed(failing.get(), "gone"));  // the same failure: not logged again

  signing_health dropped(std::chrono::milliseconds(0));
  dropped.carry_from(before, {other.get()});
  EXPECT_EQ(dropped.failure(), "");

  // What is asked from then on is the new listener's handle: one that signs ends it (review:
  // the old, dead handle was kept and asked for good).
  signing_health before_b(std::chrono::milliseconds(0));
  tls::evp_pkey_ptr key(test::make_key());
  EXPECT_TRUE(before_b.failed(public_only_of(key.get()).get(), "gone"));
  signing_health renewed(std::chrono::milliseconds(0));
  renewed.carry_from(before_b, {key.get()});  // the same public key, a handle that signs
  EXPECT_EQ(renewed.failure(), "");
  renewed.carry_from(renewed, {key.get()});  // itself: nothing (no deadlock)
}

// Review: only the last key that failed was kept, so a second key failing and then signing
// ended the first one's failure too, and /readyz said ready while the first still failed.
TEST(SigningHealth, EveryFailingKeyMustSignAgain) {
  signing_health h(std::chrono::milliseconds(0));
  const auto first = public_only();
  tls::evp_pkey_ptr second(test::make_key());
  EXPECT_TRUE(h.failed(first.get(), "first gone"));
  EXPECT_TRUE(h.failed(second.get(), "second busy"));
  EXPECT_FALSE(h.signed_ok(second.get()));  // the second's failure ends, not the listener's
  EXPECT_TRUE(h.failing());
  EXPECT_EQ(h.failure(), "first gone");  // asked again: the first still does not sign
  const auto third = public_only();
  EXPECT_TRUE(h.failed(third.get(), "third gone"));
  EXPECT_EQ(h.failure(), "first gone (and 1 more of its keys)");
  EXPECT_FALSE(h.signed_ok(third.get()));
  EXPECT_TRUE(h.signed_ok(first.get()));
  EXPECT_FALSE(h.failing());
  EXPECT_EQ(h.failure(), "");
}

// /readyz may be asked as often as anyone likes: the token is asked at most every interval.
TEST(SigningHealth, TheKeyIsAskedAtMostEveryProbeInterval) {
  signing_health h;  // 5 s
  tls::evp_pkey_ptr key(test::make_key());
  EXPECT_TRUE(h.failed(key.get(), "the token was busy"));
  EXPECT_EQ(h.failure(), "the token was busy");  // the handshake asked it just now
}

}  // namespace
}  // namespace mtlsd::runtime
