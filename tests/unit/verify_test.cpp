// The verification path of live handshakes and `mtlsd verify`: tls::build_context from a real
// configuration pointing at test_pki files, then verifier::verify_offline on client (and server)
// certificates; and runtime::build / runtime::warnings on broken and risky credentials.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/verify.hpp"
#include "test_pki.hpp"

namespace mtlsd {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string utc(std::time_t t) {
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// One PKI for all tests in this file. The root is valid since a year ago, so that `--at` tests
// can move the clock back without leaving the root's window.
struct shared_pki {
  test::credential root;
  test::credential intermediate;
  test::credential other_root;
  test::credential server;  // our own certificate, issued by root
};

shared_pki* pki = nullptr;

class PkiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    pki = new shared_pki;
    pki->root =
        test::make_root_ca({.cn = "Verify Root", .not_before = test::now() - test::days(365)});
    pki->intermediate = test::make_intermediate(
        pki->root, {.cn = "Verify Intermediate", .not_before = test::now() - test::days(365)});
    pki->other_root = test::make_root_ca({.cn = "Other Root"});
    pki->server = test::make_leaf(
        pki->root, {.cn = "server", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
  }
  void TearDown() override {
    delete pki;
    pki = nullptr;
  }
};

[[maybe_unused]] ::testing::Environment* const pki_env =
    ::testing::AddGlobalTestEnvironment(new PkiEnvironment);

// A temporary directory with root.crt, intermediate.crt, other-root.crt, server.crt/key, and a
// configuration written next to them (relative paths resolve against it).
class ConfigDir {
 public:
  ConfigDir() {
    dir_.write("root.crt", test::to_pem(pki->root.cert()), 0644);
    dir_.write("intermediate.crt", test::to_pem(pki->intermediate.cert()), 0644);
    dir_.write("other-root.crt", test::to_pem(pki->other_root.cert()), 0644);
    dir_.write_pair("server", pki->server);
  }

  test::pki_dir& dir() { return dir_; }
  std::string path(const std::string& name) const { return (dir_.path() / name).string(); }
  std::string conf_path() const { return path("mtlsd.yaml"); }

  // A server-mode listener. Lines: 1 listeners, 2 name, 3 listen, 4 upstream, 5 client_auth,
  // 6 ca, then `client_auth_extra`, then `tls:` with cert and key (cert on the next line after
  // `tls:`) and `tls_extra`.
  config::configuration server(
      const std::string& client_auth_extra = "",
      const std::string& tls_lines = "      cert: server.crt\n      key: server.key\n") {
    return load(
        "listeners:\n"
        "  - name: inbound\n"
        "    listen: 127.0.0.1:0\n"
        "    upstream: 127.0.0.1:8080\n"
        "    client_auth:\n"
        "      ca: [root.crt]\n" +
        client_auth_extra + "    tls:\n" + tls_lines);
  }

  config::configuration load(const std::string& yaml) {
    dir_.write("mtlsd.yaml", yaml, 0644);
    config::load_result r = config::load_file(conf_path());
    for (const auto& p : r.problems)
      ADD_FAILURE() << "configuration problem: " << p.str();
    if (!r.config) throw std::runtime_error("test configuration does not load");
    return *r.config;
  }

 private:
  test::pki_dir dir_;
};

tls::verify_outcome verify(const tls::tls_context& t, const test::credential& leaf,
                           const std::vector<test::credential>& chain = {},
                           std::optional<std::time_t> at = std::nullopt,
                           const tls::peer_context& peer = {}) {
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (const auto& c : chain)
    sk_X509_push(untrusted, c.cert());
  tls::verify_outcome out =
      t.peer_verifier->verify_offline(t.ctx.get(), leaf.cert(), untrusted, at, peer);
  sk_X509_free(untrusted);
  return out;
}

// What an unknown_ca detail adds after the failing certificate.
const std::string kMissingIssuerHint =
    " is not in the trust store and was not sent by the peer (a missing intermediate must be "
    "sent by the peer or added to the CA bundle)";

std::string refusal(const tls::verify_outcome& o) {
  return o.refusal ? std::string(to_string(*o.refusal)) : std::string("accepted");
}

// --- client certificates judged by a server-mode listener ----------------------------------

class VerifyClientTest : public ::testing::Test {
 protected:
  tls::tls_context context(const std::string& client_auth_extra = "") {
    config::configuration c = files_.server(client_auth_extra);
    return tls::build_context(c.listeners.at(0));
  }
  ConfigDir files_;
};

TEST_F(VerifyClientTest, GoodClientIsAcceptedWithItsIdentity) {
  auto t = context();
  auto leaf = test::make_leaf(
      pki->root, {.cn = "alice", .uri_sans = {"spiffe://example.org/ns/prod/sa/alice"}});
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "accepted") << o.detail;
  EXPECT_EQ(o.detail, "");
  ASSERT_TRUE(o.identity.has_value());
  EXPECT_EQ(o.identity->spiffe_id, "spiffe://example.org/ns/prod/sa/alice");
  EXPECT_EQ(o.identity->common_name, "alice");
  EXPECT_EQ(o.identity->issuer, "CN=Verify Root,O=mtlsd tests");
  EXPECT_EQ(o.identity->sha256, tls::sha256_fingerprint(leaf.cert()));
}

TEST_F(VerifyClientTest, ContextHoldsOwnChainAndTrust) {
  auto t = context();
  ASSERT_EQ(t.own_chain.size(), 1u);
  EXPECT_EQ(tls::subject_of(t.own_chain[0].get()), "CN=server,O=mtlsd tests");
  ASSERT_EQ(t.trust.size(), 1u);
  EXPECT_EQ(tls::subject_of(t.trust[0].get()), "CN=Verify Root,O=mtlsd tests");
  EXPECT_EQ(t.peer_verifier->role(), tls::peer_role::client);
  EXPECT_EQ(SSL_CTX_get_verify_mode(t.ctx.get()),
            SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}

TEST_F(VerifyClientTest, Expired) {
  auto t = context();
  auto leaf = test::make_leaf(pki->root, {.cn = "old",
                                          .not_before = test::now() - test::days(10),
                                          .not_after = test::now() - test::days(2)});
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "expired");
  EXPECT_EQ(o.detail, "certificate has expired (depth 0: CN=old,O=mtlsd tests)");
  EXPECT_FALSE(o.identity.has_value());
  // The access log still names what was refused.
  ASSERT_TRUE(o.refused_peer.has_value());
  EXPECT_EQ(o.refused_peer->subject, "CN=old,O=mtlsd tests");
  EXPECT_EQ(o.refused_peer->sha256, tls::sha256_fingerprint(leaf.cert()));
}

TEST_F(VerifyClientTest, ARefusedPeerIsRecordedOnlyWhenRefused) {
  auto t = context(
      "      allow:\n"
      "        common_names: [bob]\n");
  auto alice = test::make_leaf(pki->root, {.cn = "alice"});
  auto o = verify(t, alice);
  EXPECT_EQ(refusal(o), "not_authorized");
  ASSERT_TRUE(o.refused_peer.has_value());
  EXPECT_EQ(o.refused_peer->common_name, "alice");
  // Refused below the leaf (unknown issuer): the leaf is still the one named.
  auto stranger = verify(t, test::make_leaf(pki->other_root, {.cn = "stranger"}));
  EXPECT_EQ(refusal(stranger), "unknown_ca");
  ASSERT_TRUE(stranger.refused_peer.has_value());
  EXPECT_EQ(stranger.refused_peer->common_name, "stranger");
  auto bob = verify(t, test::make_leaf(pki->root, {.cn = "bob"}));
  EXPECT_EQ(refusal(bob), "accepted");
  EXPECT_FALSE(bob.refused_peer.has_value());
}

TEST_F(VerifyClientTest, NotYetValid) {
  auto t = context();
  auto leaf = test::make_leaf(pki->root, {.cn = "future",
                                          .not_before = test::now() + test::days(2),
                                          .not_after = test::now() + test::days(10)});
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "not_yet_valid");
  EXPECT_EQ(o.detail, "certificate is not yet valid (depth 0: CN=future,O=mtlsd tests)");
}

TEST_F(VerifyClientTest, OtherCaIsUnknown) {
  auto t = context();
  auto leaf = test::make_leaf(pki->other_root, {.cn = "stranger"});
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "unknown_ca");
  EXPECT_EQ(o.detail,
            "unable to get local issuer certificate (depth 0: CN=stranger,O=mtlsd tests); issuer "
            "CN=Other Root,O=mtlsd tests" +
                kMissingIssuerHint);
  // Sending the foreign root along does not help: it is not a trust anchor.
  EXPECT_EQ(refusal(verify(t, leaf, {pki->other_root})), "unknown_ca");
}

TEST_F(VerifyClientTest, SelfSignedIsUnknown) {
  auto t = context();
  auto o = verify(t, test::make_self_signed({.cn = "me"}));
  EXPECT_EQ(refusal(o), "unknown_ca");
  EXPECT_EQ(o.detail, "self-signed certificate (depth 0: CN=me,O=mtlsd tests)");
}

TEST_F(VerifyClientTest, ForgedSignatureIsBadSignature) {
  auto t = context();
  // Names and key identifiers say "Verify Root", but another key signs.
  EVP_PKEY* wrong_key = test::make_key();
  X509_up_ref(pki->root.cert());
  test::credential impostor(pki->root.cert(), wrong_key);
  auto o = verify(t, test::make_leaf(impostor, {.cn = "forged"}));
  EXPECT_EQ(refusal(o), "bad_signature");
  EXPECT_EQ(o.detail, "certificate signature failure (depth 0: CN=forged,O=mtlsd tests)");
}

TEST_F(VerifyClientTest, ServerAuthOnlyEkuIsBadKeyUsage) {
  auto t = context();
  auto o = verify(t, test::make_leaf(pki->root, {.cn = "srv", .usage = test::key_usage::server}));
  EXPECT_EQ(refusal(o), "bad_key_usage");
  EXPECT_EQ(o.detail, "unsuitable certificate purpose (depth 0: CN=srv,O=mtlsd tests)");
}

TEST_F(VerifyClientTest, EkuBothOrAbsentIsAccepted) {
  auto t = context();
  EXPECT_EQ(
      refusal(verify(t, test::make_leaf(pki->root, {.cn = "b", .usage = test::key_usage::both}))),
      "accepted");
  EXPECT_EQ(
      refusal(verify(t, test::make_leaf(pki->root, {.cn = "n", .usage = test::key_usage::none}))),
      "accepted");
}

TEST_F(VerifyClientTest, ChainViaIntermediate) {
  auto t = context();
  auto leaf = test::make_leaf(pki->intermediate, {.cn = "via-intermediate"});
  auto with = verify(t, leaf, {pki->intermediate});
  EXPECT_EQ(refusal(with), "accepted") << with.detail;
  ASSERT_TRUE(with.identity.has_value());
  EXPECT_EQ(with.identity->issuer, "CN=Verify Intermediate,O=mtlsd tests");

  auto without = verify(t, leaf);
  EXPECT_EQ(refusal(without), "unknown_ca");
  EXPECT_EQ(without.detail,
            "unable to get local issuer certificate (depth 0: CN=via-intermediate,O=mtlsd "
            "tests); issuer CN=Verify Intermediate,O=mtlsd tests" +
                kMissingIssuerHint);
}

TEST_F(VerifyClientTest, VerifyDepthCountsIntermediates) {
  auto leaf = test::make_leaf(pki->intermediate, {.cn = "deep"});
  auto direct = test::make_leaf(pki->root, {.cn = "direct"});

  auto depth0 = context("      verify_depth: 0\n");
  auto o = verify(depth0, leaf, {pki->intermediate});
  EXPECT_EQ(refusal(o), "chain_too_long");
  EXPECT_THAT(o.detail, StartsWith("certificate chain too long (depth "));
  // No intermediate: depth 0 is enough.
  EXPECT_EQ(refusal(verify(depth0, direct)), "accepted");

  auto depth1 = context("      verify_depth: 1\n");
  EXPECT_EQ(refusal(verify(depth1, leaf, {pki->intermediate})), "accepted");
}

TEST_F(VerifyClientTest, AllowListMissIsNotAuthorized) {
  auto t = context(
      "      allow:\n"
      "        spiffe_ids: [spiffe://example.org/ns/prod/*]\n"
      "        common_names: [bob]\n");
  auto alice = test::make_leaf(
      pki->root, {.cn = "alice", .uri_sans = {"spiffe://example.org/ns/dev/sa/alice"}});
  auto o = verify(t, alice);
  EXPECT_EQ(refusal(o), "not_authorized");
  EXPECT_EQ(o.detail,
            "certificate matches no allow rule: spiffe_id=spiffe://example.org/ns/dev/sa/alice "
            "cn=alice sha256=" +
                tls::sha256_fingerprint(alice.cert()));
  EXPECT_FALSE(o.identity.has_value());

  auto prod =
      test::make_leaf(pki->root, {.cn = "x", .uri_sans = {"spiffe://example.org/ns/prod/sa/api"}});
  EXPECT_EQ(refusal(verify(t, prod)), "accepted");
  EXPECT_EQ(refusal(verify(t, test::make_leaf(pki->root, {.cn = "bob"}))), "accepted");
}

TEST_F(VerifyClientTest, RulesSeeTheSourceAndSniVerifyIsGiven) {
  auto t = context(
      "      allow:\n"
      "        rules:\n"
      "          - spiffe_ids: [spiffe://example.org/ns/prod/*]\n"
      "            source_cidrs: [10.0.0.0/8]\n"
      "            sni: [api.example.org]\n");
  auto api =
      test::make_leaf(pki->root, {.cn = "x", .uri_sans = {"spiffe://example.org/ns/prod/sa/api"}});
  const auto inside = *config::parse_ip("10.1.2.3"), outside = *config::parse_ip("192.0.2.1");
  auto o = verify(t, api, {}, std::nullopt, {&inside, "api.example.org"});
  EXPECT_EQ(refusal(o), "accepted");
  EXPECT_EQ(o.match.rule, 0);
  o = verify(t, api, {}, std::nullopt, {&outside, "api.example.org"});
  EXPECT_EQ(refusal(o), "not_authorized");
  EXPECT_THAT(o.detail, ::testing::EndsWith("source_cidrs [10.0.0.0/8] does not match "
                                            "source=192.0.2.1"));
  EXPECT_EQ(refusal(verify(t, api, {}, std::nullopt, {&inside, ""})), "not_authorized");
  EXPECT_EQ(refusal(verify(t, api)), "not_authorized");  // no source, no SNI
}

TEST_F(VerifyClientTest, AllowListByFingerprintFromConfig) {
  auto leaf = test::make_leaf(pki->root, {.cn = "pinned"});
  std::string fp = tls::sha256_fingerprint(leaf.cert());
  std::string colons;  // "AB:CD:..." as an operator would paste it
  for (std::size_t i = 0; i < fp.size(); i += 2)
    colons += (colons.empty() ? "" : ":") + fp.substr(i, 2);
  for (auto& ch : colons)
    ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  auto t = context("      allow:\n        sha256_fingerprints: [\"" + colons + "\"]\n");
  EXPECT_EQ(refusal(verify(t, leaf)), "accepted");
  EXPECT_EQ(refusal(verify(t, test::make_leaf(pki->root, {.cn = "pinned"}))), "not_authorized");
}

TEST_F(VerifyClientTest, AtTimeMakesAnExpiredCertificateValid) {
  auto t = context();
  const std::time_t now = test::now();
  auto leaf = test::make_leaf(
      pki->root,
      {.cn = "was-valid", .not_before = now - test::days(30), .not_after = now - test::days(10)});
  EXPECT_EQ(refusal(verify(t, leaf)), "expired");
  auto then = verify(t, leaf, {}, now - test::days(20));
  EXPECT_EQ(refusal(then), "accepted") << then.detail;
  EXPECT_EQ(refusal(verify(t, leaf, {}, now - test::days(31))), "not_yet_valid");
}

TEST_F(VerifyClientTest, AtTimeCanAlsoExpireAValidCertificate) {
  auto t = context();
  auto leaf = test::make_leaf(pki->root, {.cn = "short", .not_after = test::now() + test::days(5)});
  EXPECT_EQ(refusal(verify(t, leaf)), "accepted");
  EXPECT_EQ(refusal(verify(t, leaf, {}, test::now() + test::days(6))), "expired");
}

TEST_F(VerifyClientTest, OptionalModeStillVerifiesPresentedCertificates) {
  auto t = context("      mode: optional\n");
  EXPECT_EQ(SSL_CTX_get_verify_mode(t.ctx.get()), SSL_VERIFY_PEER);
  EXPECT_EQ(refusal(verify(t, test::make_leaf(pki->other_root, {.cn = "x"}))), "unknown_ca");
  EXPECT_EQ(refusal(verify(t, test::make_leaf(pki->root, {.cn = "y"}))), "accepted");
}

// A smoke test of test_pki's CRLs with the CRL support of build_context (the revocation suite
// goes further).
TEST_F(VerifyClientTest, CrlFromTestPkiRevokes) {
  auto good = test::make_leaf(pki->root, {.cn = "good"});
  auto bad = test::make_leaf(pki->root, {.cn = "bad"});
  tls::x509_crl_ptr crl(test::make_crl(
      pki->root, {.revoked = {{test::serial_of(bad.cert()), test::now() - test::hours(2)}}}));
  files_.dir().write("root.crl", test::to_pem(crl.get()), 0644);
  auto t = context("    revocation:\n      crl_files: [root.crl]\n");
  ASSERT_EQ(t.crls.size(), 1u);

  auto o = verify(t, bad);
  EXPECT_EQ(refusal(o), "revoked");
  EXPECT_EQ(o.detail, "certificate revoked (depth 0: CN=bad,O=mtlsd tests) (crl file)");
  EXPECT_EQ(o.crl, mtlsd::revocation_status::revoked);
  auto g = verify(t, good);
  EXPECT_EQ(refusal(g), "accepted") << g.detail;
  EXPECT_EQ(g.crl, mtlsd::revocation_status::good);
}

TEST_F(VerifyClientTest, DerCrlAndStaleCrl) {
  auto leaf = test::make_leaf(pki->root, {.cn = "leaf"});
  tls::x509_crl_ptr stale(test::make_crl(pki->root, {.this_update = test::now() - test::days(10),
                                                     .next_update = test::now() - test::days(1)}));
  files_.dir().write("root.crl", test::to_der(stale.get()), 0644);
  auto t = context("    revocation:\n      crl_files: [root.crl]\n");
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "revocation_unavailable");
  EXPECT_EQ(o.detail, "CRL has expired (depth 0: CN=leaf,O=mtlsd tests) (crl file)");
  EXPECT_EQ(o.crl, mtlsd::revocation_status::unavailable);
}

// on_unavailable: allow admits and warns with crl_note. With crl_scope chain the stale root CRL
// fails the root's own check too, after the leaf's: the note names the leaf, as a refusal would
// (it named the root, depth 1).
TEST_F(VerifyClientTest, ASoftFailNoteNamesTheFirstCertificateWithoutACrl) {
  auto leaf = test::make_leaf(pki->root, {.cn = "leaf"});
  tls::x509_crl_ptr stale(test::make_crl(pki->root, {.this_update = test::now() - test::days(10),
                                                     .next_update = test::now() - test::days(1)}));
  files_.dir().write("root.crl", test::to_pem(stale.get()), 0644);
  auto t = context(
      "    revocation:\n      crl_files: [root.crl]\n      crl_scope: chain\n"
      "      on_unavailable: allow\n");
  auto o = verify(t, leaf);
  EXPECT_EQ(refusal(o), "accepted");
  EXPECT_EQ(o.crl, mtlsd::revocation_status::unavailable);
  EXPECT_EQ(o.crl_note, "CRL has expired (depth 0: CN=leaf,O=mtlsd tests)");
}

TEST_F(VerifyClientTest, BadCipherListNamesTheTlsBlock) {
  config::configuration c = files_.server(
      "", "      cert: server.crt\n      key: server.key\n      ciphers: NOT-A-CIPHER\n");
  try {
    tls::build_context(c.listeners.at(0));
    ADD_FAILURE() << "build_context accepted an unusable cipher list";
  } catch (const config::config_error& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].where.str(), files_.conf_path() + ":8:7");
    EXPECT_THAT(e.problems()[0].message,
                StartsWith("tls.ciphers: no usable TLS 1.2 cipher in 'NOT-A-CIPHER': "));
  }
}

// --- server certificates judged by a client-mode listener ----------------------------------

class VerifyServerTest : public ::testing::Test {
 protected:
  tls::tls_context context(const std::string& upstream, const std::string& server_auth_extra = "") {
    config::configuration c = files_.load(
        "listeners:\n"
        "  - name: outbound\n"
        "    mode: client\n"
        "    listen: 127.0.0.1:0\n"
        "    upstream: " +
        upstream +
        "\n"
        "    server_auth:\n"
        "      ca: [root.crt]\n" +
        server_auth_extra);
    return tls::build_context(c.listeners.at(0));
  }
  test::credential server_cert(std::vector<std::string> dns, std::vector<std::string> ips = {},
                               test::key_usage usage = test::key_usage::server) {
    return test::make_leaf(
        pki->root,
        {.cn = "upstream", .dns_sans = std::move(dns), .ip_sans = std::move(ips), .usage = usage});
  }
  ConfigDir files_;
};

TEST_F(VerifyServerTest, NameFromUpstreamHost) {
  auto t = context("api.example.org:443");
  EXPECT_EQ(t.server_name, "api.example.org");
  EXPECT_EQ(t.peer_verifier->role(), tls::peer_role::server);
  auto o = verify(t, server_cert({"api.example.org"}));
  EXPECT_EQ(refusal(o), "accepted") << o.detail;
  o = verify(t, server_cert({"web.example.org"}));
  EXPECT_EQ(refusal(o), "hostname_mismatch");
  EXPECT_EQ(o.detail,
            "hostname mismatch: expected api.example.org; certificate has "
            "DNS:web.example.org");
}

// A mismatch names what was expected and what the certificate has (review: "hostname mismatch
// (depth 0: )" for a cert-manager SPIFFE certificate, whose subject is empty).
TEST_F(VerifyServerTest, HostnameMismatchNamesTheCertificatesNames) {
  auto t = context("orders.shop.svc.cluster.local:8443");
  auto o = verify(
      t, test::make_leaf(pki->root, {.cn = "orders",
                                     .uri_sans = {"spiffe://cluster.local/ns/shop/sa/orders"},
                                     .dns_sans = {"orders.shop"},
                                     .ip_sans = {"10.0.0.7", "fd00::7"},
                                     .usage = test::key_usage::server,
                                     .email_sans = {"ops@example.org"}}));
  EXPECT_EQ(refusal(o), "hostname_mismatch");
  EXPECT_EQ(o.detail,
            "hostname mismatch: expected orders.shop.svc.cluster.local; certificate has "
            "URI:spiffe://cluster.local/ns/shop/sa/orders, DNS:orders.shop, IP:10.0.0.7, "
            "IP:fd00::7");

  // None of those names: the subject says whose certificate it is.
  o = verify(t, server_cert({}));
  EXPECT_EQ(o.detail,
            "hostname mismatch: expected orders.shop.svc.cluster.local; certificate has no DNS, "
            "IP or URI names (subject CN=upstream,O=mtlsd tests)");

  // Many names, a long one and one with a control character: bounded, on one line.
  std::vector<std::string> many = {std::string(100, 'a') + ".example", "bad\nname.example"};
  for (int i = 0; i < 7; ++i)
    many.push_back("n" + std::to_string(i) + ".example");
  o = verify(t, server_cert(many));
  EXPECT_EQ(o.detail,
            "hostname mismatch: expected orders.shop.svc.cluster.local; certificate has "
            "DNS:" +
                std::string(77, 'a') +
                "..., DNS:bad?name.example, DNS:n0.example, "
                "DNS:n1.example, DNS:n2.example, DNS:n3.example and 3 more");
}

TEST_F(VerifyServerTest, ServerNameOverridesUpstreamHost) {
  auto t = context("10.0.0.5:443", "      server_name: api.internal\n");
  EXPECT_EQ(t.server_name, "api.internal");
  EXPECT_EQ(refusal(verify(t, server_cert({"api.internal"}))), "accepted");
  EXPECT_EQ(refusal(verify(t, server_cert({}, {"10.0.0.5"}))), "hostname_mismatch");
}

TEST_F(VerifyServerTest, AConfiguredNamesFinalDotIsDropped) {
  for (const auto& [upstream, extra] :
       {std::pair<std::string, std::string>{"api.example.org.:443", ""},
        {"10.0.0.5:443", "      server_name: api.example.org.\n"}}) {
    auto t = context(upstream, extra);
    EXPECT_EQ(t.server_name, "api.example.org");  // also the SNI sent
    EXPECT_EQ(refusal(verify(t, server_cert({"api.example.org"}))), "accepted");
    EXPECT_EQ(refusal(verify(t, server_cert({"web.example.org"}))), "hostname_mismatch");
  }
}

TEST_F(VerifyServerTest, IpUpstreamChecksIpSans) {
  auto t = context("10.0.0.5:443");
  EXPECT_EQ(refusal(verify(t, server_cert({}, {"10.0.0.5"}))), "accepted");
  auto o = verify(t, server_cert({"10.0.0.5"}, {"10.0.0.6"}));
  EXPECT_EQ(refusal(o), "hostname_mismatch");
  EXPECT_EQ(o.detail,
            "IP address mismatch: expected 10.0.0.5; certificate has DNS:10.0.0.5, "
            "IP:10.0.0.6");
}

TEST_F(VerifyServerTest, ClientOnlyEkuIsBadKeyUsage) {
  auto t = context("api.example.org:443");
  EXPECT_EQ(refusal(verify(t, server_cert({"api.example.org"}, {}, test::key_usage::client))),
            "bad_key_usage");
}

// A remote server's keyUsage, when present, allows digitalSignature, as a client's must;
// OpenSSL's server purpose also takes keyEncipherment alone (found by verify_chain_fuzz) and
// keyAgreement alone (a review), which no handshake mtlsd allows uses: every one has the peer
// sign.
TEST_F(VerifyServerTest, AKeyUsageWithoutDigitalSignatureIsBadKeyUsage) {
  auto t = context("api.example.org:443");
  auto leaf = [&](const char* bits) {
    return test::make_leaf(pki->root, {.cn = "upstream",
                                       .dns_sans = {"api.example.org"},
                                       .usage = test::key_usage::server,
                                       .key_usage_bits = bits});
  };
  const auto o = verify(t, leaf("critical,keyEncipherment"));
  EXPECT_EQ(refusal(o), "bad_key_usage");
  EXPECT_NE(o.detail.find("digital signature"), std::string::npos) << o.detail;
  EXPECT_EQ(refusal(verify(t, leaf("critical,keyAgreement"))), "bad_key_usage");
  EXPECT_EQ(refusal(verify(t, leaf("critical,digitalSignature,keyEncipherment"))), "accepted");
}

TEST_F(VerifyServerTest, AllowListAppliesToTheServer) {
  auto t = context("api.example.org:443",
                   "      allow:\n        spiffe_ids: [spiffe://example.org/ns/prod/sa/api]\n");
  auto good = test::make_leaf(pki->root, {.cn = "api",
                                          .uri_sans = {"spiffe://example.org/ns/prod/sa/api"},
                                          .dns_sans = {"api.example.org"},
                                          .usage = test::key_usage::server});
  EXPECT_EQ(refusal(verify(t, good)), "accepted");
  EXPECT_EQ(refusal(verify(t, server_cert({"api.example.org"}))), "not_authorized");
}

// --- runtime::build: our own credentials ---------------------------------------------------

config::diagnostics build_problems(const config::configuration& c) {
  try {
    runtime::build(c);
  } catch (const config::config_error& e) {
    return e.problems();
  }
  ADD_FAILURE() << "runtime::build succeeded";
  return {};
}

class RuntimeBuildTest : public ::testing::Test {
 protected:
  // Lines 7 (`tls:`), 8 (cert, value at column 13) and 9 (key, value at column 12).
  std::string at(int line, int col) const {
    return files_.conf_path() + ":" + std::to_string(line) + ":" + std::to_string(col);
  }
  // A server-mode listener trusting only `ca_file` for clients (its `ca:` at line 6, column 7).
  config::configuration trusting(const std::string& ca_file) {
    return files_.load(
        "listeners:\n"
        "  - name: inbound\n"
        "    listen: 127.0.0.1:0\n"
        "    upstream: 127.0.0.1:8080\n"
        "    client_auth:\n"
        "      ca: [" +
        ca_file +
        "]\n"
        "    tls: {cert: server.crt, key: server.key}\n");
  }
  ConfigDir files_;
};

TEST_F(RuntimeBuildTest, GoodConfigurationBuilds) {
  auto rt = runtime::build(files_.server());
  ASSERT_EQ(rt->listeners.size(), 1u);
  EXPECT_EQ(rt->find("inbound"), rt->listeners[0]);
  EXPECT_EQ(rt->find("nope"), nullptr);
  EXPECT_EQ(rt->listeners[0]->tls.own_chain.size(), 1u);
  EXPECT_THAT(runtime::warnings(*rt), ElementsAre());
}

TEST_F(RuntimeBuildTest, MissingCertificateFile) {
  auto problems =
      build_problems(files_.server("", "      cert: absent.crt\n      key: server.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(), at(8, 13) + ": " + files_.path("absent.crt") +
                                   ": cannot read certificate: No such file or directory");
}

TEST_F(RuntimeBuildTest, MissingCaFile) {
  std::remove(files_.path("root.crt").c_str());
  auto problems = build_problems(files_.server());
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(), at(6, 12) + ": " + files_.path("root.crt") +
                                   ": cannot read certificate: No such file or directory");
}

TEST_F(RuntimeBuildTest, NotPem) {
  files_.dir().write("garbage.crt", "hello\n");
  auto problems =
      build_problems(files_.server("", "      cert: garbage.crt\n      key: server.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where.str(), at(8, 13));
  EXPECT_THAT(problems[0].message,
              StartsWith(files_.path("garbage.crt") +
                         ": no certificate found (expected PEM '-----BEGIN CERTIFICATE-----' or "
                         "DER)"));
}

// Review: a CRL file holding a certificate ended its message in a dangling ": ".
TEST_F(RuntimeBuildTest, ACrlFileWithoutACrl) {
  files_.dir().write("cert.crl", test::to_pem(pki->root.cert()), 0644);
  auto problems = build_problems(files_.server("    revocation:\n      crl_files: [cert.crl]\n",
                                               "      cert: server.crt\n"
                                               "      key: server.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(
      problems[0].message,
      files_.path("cert.crl") + ": no CRL found (expected PEM '-----BEGIN X509 CRL-----' or DER)");
}

// A TLS 1.2-only listener whose ciphers cannot sign with its key loaded, and then failed every
// handshake with "no shared cipher"; check passed it (review).
TEST_F(RuntimeBuildTest, ATls12OnlyListenerNeedsACipherItsKeyCanSignFor) {
  const std::string tls12 = "      max_version: \"1.2\"\n";
  const std::string rsa_only = "      ciphers: ECDHE-RSA-AES128-GCM-SHA256\n";
  const std::string ecdsa_only = "      ciphers: ECDHE-ECDSA-AES128-GCM-SHA256\n";
  const std::string pair = "      cert: server.crt\n      key: server.key\n";
  auto problems = build_problems(files_.server("", pair + tls12 + rsa_only));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where.line, 11);  // the `ciphers` key
  EXPECT_EQ(problems[0].message,
            "tls.ciphers: no ECDHE-ECDSA cipher for the ECDSA key of CN=server,O=mtlsd tests, and "
            "max_version \"1.2\" rules out TLS 1.3: every handshake would fail (no shared "
            "cipher)");
  files_.dir().write_pair("rsa", test::make_leaf(pki->root, {.cn = "rsa server",
                                                             .usage = test::key_usage::server,
                                                             .key_type = "RSA-2048"}));
  const std::string rsa_pair = "      cert: rsa.crt\n      key: rsa.key\n";
  problems = build_problems(files_.server("", rsa_pair + tls12 + ecdsa_only));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0].message,
              StartsWith("tls.ciphers: no ECDHE-RSA cipher for the RSA key of CN=rsa server,"));
  // A cipher for the key, or TLS 1.3 allowed, and it builds.
  EXPECT_NO_THROW(runtime::build(files_.server("", pair + tls12 + ecdsa_only)));
  EXPECT_NO_THROW(runtime::build(files_.server("", rsa_pair + tls12 + rsa_only)));
  EXPECT_NO_THROW(runtime::build(files_.server("", pair + rsa_only)));
}

TEST_F(RuntimeBuildTest, KeyDoesNotMatchCertificate) {
  tls::evp_pkey_ptr other_key(test::make_key());
  files_.dir().write("other.key", test::key_to_pem(other_key.get()));
  auto problems =
      build_problems(files_.server("", "      cert: server.crt\n      key: other.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(), at(9, 12) + ": " + files_.path("other.key") +
                                   ": private key does not match the certificate in " +
                                   files_.path("server.crt") + " (CN=server,O=mtlsd tests)");
}

// Review: an issuer first in the file was blamed on the key ("does not match"), which sent the
// operator after the key pair; the order is what to fix.
TEST_F(RuntimeBuildTest, AKeyOfALaterCertificateInTheFileIsAnOrderProblem) {
  files_.dir().write("ooo.crt", test::to_pem(pki->root.cert()) + test::to_pem(pki->server.cert()),
                     0644);
  auto problems = build_problems(files_.server("", "      cert: ooo.crt\n      key: server.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where.str(), at(8, 13));
  EXPECT_THAT(problems[0].message,
              AllOf(HasSubstr(files_.path("ooo.crt") +
                              ": chain is out of order: the private key "
                              "in " +
                              files_.path("server.key") + " belongs to certificate 2 (CN=server"),
                    HasSubstr("(put the leaf first, then each issuer)")));
}

TEST_F(RuntimeBuildTest, TraditionalKeyFormat) {
  files_.dir().write("trad.key", test::key_to_traditional_pem(pki->server.key()));
  ASSERT_THAT(test::key_to_traditional_pem(pki->server.key()),
              StartsWith("-----BEGIN EC PRIVATE KEY-----"));
  EXPECT_NO_THROW(
      runtime::build(files_.server("", "      cert: server.crt\n      key: trad.key\n")));
}

TEST_F(RuntimeBuildTest, DerCertificate) {
  files_.dir().write("server.der", test::to_der(pki->server.cert()));
  EXPECT_NO_THROW(
      runtime::build(files_.server("", "      cert: server.der\n      key: server.key\n")));
}

TEST_F(RuntimeBuildTest, EncryptedKeyWithoutPassword) {
  files_.dir().write("enc.key", test::key_to_encrypted_pem(pki->server.key(), "s3cret"));
  auto problems = build_problems(files_.server("", "      cert: server.crt\n      key: enc.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(),
            at(9, 12) + ": " + files_.path("enc.key") +
                ": private key is encrypted: set key_password_file (or pkcs12_password_file)");
}

TEST_F(RuntimeBuildTest, EncryptedKeyWithWrongPassword) {
  files_.dir().write("enc.key", test::key_to_encrypted_pem(pki->server.key(), "s3cret"));
  files_.dir().write("key.pass", "wrong\n");
  auto problems = build_problems(files_.server(
      "", "      cert: server.crt\n      key: enc.key\n      key_password_file: key.pass\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where.str(), at(9, 12));
  EXPECT_THAT(problems[0].message, StartsWith(files_.path("enc.key") +
                                              ": cannot decrypt private key: wrong password? ("));
}

TEST_F(RuntimeBuildTest, EncryptedKeyWithRightPassword) {
  files_.dir().write("enc.key", test::key_to_encrypted_pem(pki->server.key(), "s3cret"));
  files_.dir().write("key.pass", "s3cret\n");  // the trailing newline is not part of it
  auto rt = runtime::build(files_.server(
      "", "      cert: server.crt\n      key: enc.key\n      key_password_file: key.pass\n"));
  ASSERT_EQ(rt->listeners.size(), 1u);
}

TEST_F(RuntimeBuildTest, MissingPasswordFile) {
  files_.dir().write("enc.key", test::key_to_encrypted_pem(pki->server.key(), "s3cret"));
  auto problems = build_problems(files_.server(
      "", "      cert: server.crt\n      key: enc.key\n      key_password_file: nope.pass\n"));
  ASSERT_EQ(problems.size(), 1u);
  // Named by its key, not by its path: that may be a password pasted where it belongs.
  EXPECT_EQ(problems[0].str(), at(10, 26) +
                                   ": key_password_file: cannot read the password file (No such "
                                   "file or directory); its path is not shown, as it may be a "
                                   "pasted secret");
}

TEST_F(RuntimeBuildTest, Pkcs12WithRightPassword) {
  auto leaf =
      test::make_leaf(pki->intermediate, {.cn = "p12 server", .usage = test::key_usage::server});
  files_.dir().write("server.p12", test::to_pkcs12(leaf, {pki->intermediate}, "p12pass"));
  files_.dir().write("p12.pass", "p12pass");
  auto rt = runtime::build(
      files_.server("", "      pkcs12: server.p12\n      pkcs12_password_file: p12.pass\n"));
  const auto& chain = rt->listeners.at(0)->tls.own_chain;
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(tls::subject_of(chain[0].get()), "CN=p12 server,O=mtlsd tests");
  EXPECT_EQ(tls::subject_of(chain[1].get()), "CN=Verify Intermediate,O=mtlsd tests");
}

TEST_F(RuntimeBuildTest, Pkcs12WithWrongPassword) {
  files_.dir().write("server.p12", test::to_pkcs12(pki->server, {}, "p12pass"));
  files_.dir().write("p12.pass", "nope\n");
  auto problems = build_problems(
      files_.server("", "      pkcs12: server.p12\n      pkcs12_password_file: p12.pass\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where.str(), at(8, 15));
  EXPECT_THAT(problems[0].message, StartsWith(files_.path("server.p12") +
                                              ": cannot open PKCS#12 bundle (wrong password?): "));
}

TEST_F(RuntimeBuildTest, Pkcs12WithoutPasswordFile) {
  files_.dir().write("server.p12", test::to_pkcs12(pki->server, {}, "p12pass"));
  auto problems = build_problems(files_.server("", "      pkcs12: server.p12\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0].message,
              StartsWith(files_.path("server.p12") +
                         ": cannot open PKCS#12 bundle (is pkcs12_password_file set?): "));
}

TEST_F(RuntimeBuildTest, ExpiredOwnCertificateIsRejected) {
  const std::time_t expired_at = test::now() - test::days(3);
  auto old = test::make_leaf(pki->root, {.cn = "old server",
                                         .usage = test::key_usage::server,
                                         .not_before = test::now() - test::days(30),
                                         .not_after = expired_at});
  files_.dir().write_pair("old", old);
  auto problems = build_problems(files_.server("", "      cert: old.crt\n      key: old.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(), at(8, 13) + ": " + files_.path("old.crt") +
                                   ": certificate CN=old server,O=mtlsd tests expired at " +
                                   utc(expired_at));
}

TEST_F(RuntimeBuildTest, VerifyCommandSkipsOwnValidity) {
  // `mtlsd verify` judges a peer's certificate; our own expired one must not get in the way.
  auto old = test::make_leaf(pki->root, {.cn = "old server",
                                         .usage = test::key_usage::server,
                                         .not_before = test::now() - test::days(30),
                                         .not_after = test::now() - test::days(3)});
  files_.dir().write_pair("old", old);
  runtime::build_options opts;
  opts.check_own_validity = false;
  EXPECT_NO_THROW(
      runtime::build(files_.server("", "      cert: old.crt\n      key: old.key\n"), opts));
}

TEST_F(RuntimeBuildTest, NotYetValidOwnCertificateIsRejected) {
  const std::time_t from = test::now() + test::days(3);
  auto early = test::make_leaf(pki->root, {.cn = "early",
                                           .usage = test::key_usage::server,
                                           .not_before = from,
                                           .not_after = from + test::days(30)});
  files_.dir().write_pair("early", early);
  auto problems =
      build_problems(files_.server("", "      cert: early.crt\n      key: early.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(), at(8, 13) + ": " + files_.path("early.crt") +
                                   ": certificate CN=early,O=mtlsd tests is not valid before " +
                                   utc(from));
}

// Our certificate expired while it served: a reload that changes something else (a CRL, a rule)
// still goes ahead, naming it in the warnings; refusing would only keep the change out.
TEST_F(RuntimeBuildTest, AReloadGoesAheadWithTheExpiredCertificateAlreadyServing) {
  const std::time_t expires = test::now() + test::days(3);
  auto ageing = test::make_leaf(pki->root, {.cn = "ageing",
                                            .usage = test::key_usage::server,
                                            .not_before = test::now() - test::days(30),
                                            .not_after = expires});
  files_.dir().write_pair("ageing", ageing);
  const auto cfg = files_.server("", "      cert: ageing.crt\n      key: ageing.key\n");
  const auto serving = runtime::build(cfg);
  runtime::build_options later;
  later.now = expires + test::days(1);
  EXPECT_THROW(runtime::build(cfg, later), config::config_error);  // start-up and `check`
  later.serving = serving.get();
  const auto next = runtime::build(cfg, later);
  EXPECT_THAT(
      runtime::warnings(*next, later.now),
      ElementsAre(::testing::Property(&config::diagnostic::str,
                                      at(8, 13) + ": warning: " + files_.path("ageing.crt") +
                                          ": CN=ageing,O=mtlsd tests expired at " + utc(expires) +
                                          "; served still, as before this reload (peers refuse it: "
                                          "renew it)")));
  // Another expired certificate in its place is refused as before: it is not what serves.
  auto other = test::make_leaf(pki->root, {.cn = "ageing",
                                           .usage = test::key_usage::server,
                                           .not_before = test::now() - test::days(30),
                                           .not_after = expires});
  files_.dir().write_pair("ageing", other);
  try {
    runtime::build(cfg, later);
    ADD_FAILURE() << "runtime::build succeeded";
  } catch (const config::config_error& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_THAT(e.problems()[0].message, HasSubstr("expired at " + utc(expires)));
  }
}

// Review: the exception matched any certificate served, so a new leaf under the old, expired
// intermediate went through with "served still", which is untrue for the leaf.
TEST_F(RuntimeBuildTest, ANewLeafUnderAnExpiredIntermediateThatServesIsRefused) {
  const std::time_t expires = test::now() + test::days(3);
  auto ca = test::make_intermediate(
      pki->root,
      {.cn = "Ageing CA", .not_before = test::now() - test::days(30), .not_after = expires});
  auto old_leaf = test::make_leaf(ca, {.cn = "old", .usage = test::key_usage::server});
  auto new_leaf = test::make_leaf(ca, {.cn = "new", .usage = test::key_usage::server});
  files_.dir().write_pair("srv", old_leaf, {ca});
  const auto cfg = files_.server("", "      cert: srv.crt\n      key: srv.key\n");
  const auto serving = runtime::build(cfg);
  runtime::build_options later;
  later.now = expires + test::days(1);
  later.serving = serving.get();
  EXPECT_NO_THROW(runtime::build(cfg, later));  // the same chain: goes ahead
  files_.dir().write_pair("srv", new_leaf, {ca});
  try {
    runtime::build(cfg, later);
    ADD_FAILURE() << "runtime::build succeeded";
  } catch (const config::config_error& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_THAT(e.problems()[0].message,
                HasSubstr("intermediate CN=Ageing CA,O=mtlsd tests expired at " + utc(expires)));
  }
}

TEST_F(RuntimeBuildTest, ChainOutOfOrder) {
  auto leaf =
      test::make_leaf(pki->intermediate, {.cn = "chained", .usage = test::key_usage::server});
  // The leaf, then a certificate that did not issue it.
  files_.dir().write_pair("chained", leaf, {pki->other_root});
  auto problems =
      build_problems(files_.server("", "      cert: chained.crt\n      key: chained.key\n"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].str(),
            at(8, 13) + ": " + files_.path("chained.crt") +
                ": chain is out of order: CN=Other Root,O=mtlsd tests did not issue "
                "CN=chained,O=mtlsd tests (put the leaf first, then each issuer)");
}

TEST_F(RuntimeBuildTest, EveryListenersProblemsAreReported) {
  config::configuration c = files_.load(
      "listeners:\n"
      "  - name: a\n"
      "    listen: 127.0.0.1:0\n"
      "    upstream: 127.0.0.1:8080\n"
      "    client_auth: {ca: missing-ca.crt}\n"
      "    tls: {cert: server.crt, key: server.key}\n"
      "  - name: b\n"
      "    listen: 127.0.0.1:0\n"
      "    upstream: 127.0.0.1:8081\n"
      "    client_auth: {ca: root.crt}\n"
      "    tls: {cert: missing.crt, key: server.key}\n");
  auto problems = build_problems(c);
  std::vector<std::string> got;
  for (const auto& p : problems)
    got.push_back(p.str());
  EXPECT_THAT(got, ElementsAre(at(5, 23) + ": " + files_.path("missing-ca.crt") +
                                   ": cannot read certificate: No such file or directory",
                               at(11, 17) + ": " + files_.path("missing.crt") +
                                   ": cannot read certificate: No such file or directory"));
}

TEST_F(RuntimeBuildTest, ClientModeRevocationBuilds) {
  // CRL files, OCSP and distribution points for the remote's chain in mode: client (they were
  // refused as unbuilt before; an operator who asks for them must get them).
  tls::x509_crl_ptr crl(test::make_crl(pki->root, {}));
  files_.dir().write("root.crl", test::to_pem(crl.get()), 0644);
  auto rt =
      runtime::build(files_.load("listeners:\n"
                                 "  - name: outbound\n"
                                 "    mode: client\n"
                                 "    listen: 127.0.0.1:0\n"
                                 "    upstream: 127.0.0.1:8443\n"
                                 "    server_auth:\n"
                                 "      ca: [root.crt]\n"
                                 "    revocation:\n"
                                 "      crl_files: [root.crl]\n"
                                 "      ocsp: leaf\n"
                                 "      require_staple: true\n"));
  const auto& l = *rt->listeners.front();
  EXPECT_EQ(l.tls.crls.size(), 1u);
  EXPECT_TRUE(l.revocation.network());
}

TEST_F(RuntimeBuildTest, OcspDistributionPointsAndStaplingBuild) {
  auto rt = runtime::build(
      files_.server("    revocation:\n      ocsp: leaf\n      crl_distribution_points: true\n"
                    "      stapling: true\n"));
  const auto& l = *rt->listeners.front();
  EXPECT_TRUE(l.revocation.network());
  EXPECT_TRUE(l.staple);
}

// --- runtime::warnings ---------------------------------------------------------------------

TEST_F(RuntimeBuildTest, WarnsAboutAWorldReadableKey) {
  files_.dir().write("server.key", test::key_to_pem(pki->server.key()), 0644);
  auto rt = runtime::build(files_.server());
  auto w = runtime::warnings(*rt);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(w[0].warning);
  EXPECT_EQ(w[0].str(), at(9, 12) + ": warning: " + files_.path("server.key") +
                            ": private key file is accessible by others (mode 0644); "
                            "chmod 600 it, or 640 with a group mtlsd runs in");
}

// Kubernetes fsGroup and the systemd key group: readable by a group this process is in is fine
// (the file is created with this process's group). Foreign groups: KeyExposure in cli_test.cpp.
TEST_F(RuntimeBuildTest, KeyReadableByItsOwnGroupIsFine) {
  files_.dir().write("server.key", test::key_to_pem(pki->server.key()), 0640);
  EXPECT_THAT(runtime::warnings(*runtime::build(files_.server())), ElementsAre());
}

TEST_F(RuntimeBuildTest, WarnsAboutACertificateExpiringWithin30Days) {
  const std::time_t now = test::now();
  const std::time_t not_after = now + test::days(10);
  auto soon = test::make_leaf(pki->root, {.cn = "soon",
                                          .usage = test::key_usage::server,
                                          .not_before = now - test::days(60),
                                          .not_after = not_after});
  files_.dir().write_pair("soon", soon);
  auto rt = runtime::build(files_.server("", "      cert: soon.crt\n      key: soon.key\n"));
  auto w = runtime::warnings(*rt, now);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(w[0].warning);
  EXPECT_EQ(w[0].str(), at(8, 13) + ": warning: " + files_.path("soon.crt") +
                            ": CN=soon,O=mtlsd tests expires in 10 days (" + utc(not_after) + ")");
  // 31 days before, it is not worth a warning yet.
  EXPECT_THAT(runtime::warnings(*rt, not_after - test::days(31)), ElementsAre());
}

// Review: `check` said valid for trust stores through which no peer can be admitted.
TEST_F(RuntimeBuildTest, WarnsAboutATrustedCaThatAdmitsNoOne) {
  const auto warning_for = [&](const test::credential& root) {
    files_.dir().write("odd-root.crt", test::to_pem(root.cert()), 0644);
    auto rt = runtime::build(trusting("odd-root.crt"));
    auto w = runtime::warnings(*rt);
    return w.size() == 1 ? w[0].message : std::to_string(w.size()) + " warnings";
  };
  EXPECT_EQ(warning_for(test::make_root_ca({.cn = "Weak Root", .key_type = "RSA-1024"})),
            "trusted CA CN=Weak Root,O=mtlsd tests admits no one: its key is too weak (80 bits "
            "of security; security level 2 asks for 112: RSA 2048, EC P-256) (every chain "
            "through it is refused, and a peer presenting this very certificate too)");
  EXPECT_THAT(
      warning_for(test::make_root_ca({.cn = "Server Root", .extended_key_usage = "serverAuth"})),
      HasSubstr("admits no one: its extended key usage does not include clientAuth"));
  EXPECT_EQ(
      warning_for(test::make_root_ca({.cn = "Client Root", .extended_key_usage = "clientAuth"})),
      "0 warnings");
}

TEST_F(RuntimeBuildTest, WarnsAboutATrustedCaExpiringSoon) {
  const std::time_t now = test::now();
  auto short_root = test::make_root_ca({.cn = "Short Root", .not_after = now + test::days(20)});
  files_.dir().write("short-root.crt", test::to_pem(short_root.cert()), 0644);
  auto rt = runtime::build(trusting("short-root.crt"));
  auto w = runtime::warnings(*rt, now);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].str(), at(6, 7) +
                            ": warning: trusted CA CN=Short Root,O=mtlsd tests expires in "
                            "20 days (" +
                            utc(now + test::days(20)) + ")");
}

}  // namespace
}  // namespace mtlsd

namespace mtlsd {
namespace {

// Which trust domain's bundle holds each anchor goes into the session id context: a bundle
// update that moves a CA from one trust domain to another leaves the trust store (and its
// digest) as it was, and old sessions must not resume past the new binding.
TEST(TrustBinding, NamesEachAnchorsTrustDomainWhateverTheOrder) {
  const test::credential a = test::make_root_ca({.cn = "bundle a"});
  const test::credential b = test::make_root_ca({.cn = "bundle b"});
  auto binding = [&](std::vector<std::pair<std::string, X509*>> anchors) {
    tls::verifier v(tls::peer_role::client, {});
    std::vector<tls::spiffe_anchor> bound;
    for (const auto& [td, cert] : anchors)
      bound.push_back({td, tls::up_ref(cert)});
    v.bind_trust_domains(std::move(bound));
    return v.trust_binding();
  };
  EXPECT_EQ(binding({}), "");
  const std::string ours = binding({{"example.org", a.cert()}, {"partner.example", b.cert()}});
  EXPECT_NE(ours, "");
  EXPECT_EQ(ours, binding({{"partner.example", b.cert()}, {"example.org", a.cert()}}));
  EXPECT_NE(ours, binding({{"partner.example", a.cert()}, {"example.org", b.cert()}}));
}

}  // namespace
}  // namespace mtlsd
