// stale_crl_file (tls/revocation/crl.hpp): a resumed session skips verification, so this is the
// crl_files freshness check a full handshake makes, for the resumed chain.
#include <gtest/gtest.h>

#include "mtlsd/tls/revocation/crl.hpp"
#include "test_pki.hpp"

namespace mtlsd::tls::revocation {
namespace {

class StaleCrlFile : public ::testing::Test {
 protected:
  const std::time_t now = test::now();
  test::credential root = test::make_root_ca({.cn = "Stale Root"});
  test::credential intermediate = test::make_intermediate(root, {.cn = "Stale Intermediate"});
  test::credential leaf = test::make_leaf(intermediate, {.cn = "resumed"});
  // As chain_to_anchor rebuilds it: the root is the anchor.
  rebuilt_chain chain{{leaf.cert(), intermediate.cert()}, root.cert()};

  x509_crl_ptr crl_of(const test::credential& issuer, std::time_t next_update) {
    return x509_crl_ptr(
        test::make_crl(issuer, {.this_update = next_update - 3600, .next_update = next_update}));
  }
};

TEST_F(StaleCrlFile, TheLeafsIssuerCrlPastNextUpdateAndGrace) {
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now - 10));
  EXPECT_EQ(stale_crl_file(crls, chain, false, 0, now),
            "CRL has expired (depth 0: CN=resumed,O=mtlsd tests) (crl file)");
  EXPECT_EQ(stale_crl_file(crls, chain, false, 60, now), "");  // within crl_grace
  crls.push_back(crl_of(intermediate, now + 3600));            // a fresher one of the same CA
  EXPECT_EQ(stale_crl_file(crls, chain, false, 0, now), "");
}

// The resumption path's shortcut: with every CRL current nothing is rebuilt or checked.
TEST_F(StaleCrlFile, AnyStaleSaysWhetherTheWalkIsNeeded) {
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now + 3600));
  EXPECT_FALSE(any_crl_stale(crls, 0, now));
  crls.push_back(crl_of(root, now - 10));
  EXPECT_TRUE(any_crl_stale(crls, 0, now));
  EXPECT_FALSE(any_crl_stale(crls, 60, now));  // within crl_grace
}

TEST_F(StaleCrlFile, IntermediatesOnlyWithTheWholeChain) {
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now + 3600));
  crls.push_back(crl_of(root, now - 10));  // covers the intermediate
  EXPECT_EQ(stale_crl_file(crls, chain, false, 0, now), "");
  EXPECT_EQ(stale_crl_file(crls, chain, true, 0, now),
            "CRL has expired (depth 1: CN=Stale Intermediate,O=mtlsd tests) (crl file)");
}

TEST_F(StaleCrlFile, ACertificateWithoutACrlIsLeftAsTheFullHandshakeLeftIt) {
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(root, now - 10));  // not the leaf's issuer
  EXPECT_EQ(stale_crl_file(crls, chain, false, 0, now), "");
  EXPECT_EQ(stale_crl_file({}, chain, true, 0, now), "");
}

// Review: only the intermediates a ticket carried were looked at, so a client that sent only
// its leaf (completed from the bundle), and sessions without our ticket data, had no
// intermediate checked.
TEST_F(StaleCrlFile, TheChainIsRebuiltFromTheLeafUpToTheAnchor) {
  cert_chain root_and_ca;
  root_and_ca.emplace_back(X509_dup(root.cert()));
  root_and_ca.emplace_back(X509_dup(intermediate.cert()));
  auto unrelated = test::make_root_ca({.cn = "Unrelated"});
  // Sent alone: the bundle's intermediate completes it; the root is the anchor.
  auto sent_alone = chain_to_anchor(leaf.cert(), {}, root_and_ca);
  EXPECT_EQ(sent_alone.below_anchor, (std::vector<X509*>{leaf.cert(), root_and_ca[1].get()}));
  EXPECT_EQ(sent_alone.anchor, root_and_ca[0].get());
  // What the session watches for revocations: as a full handshake's verified chain.
  EXPECT_EQ(sent_alone.with_anchor(),
            (std::vector<X509*>{leaf.cert(), root_and_ca[1].get(), root_and_ca[0].get()}));
  // Sent with an extra certificate: ignored; the bundle's copy of the CA comes first.
  EXPECT_EQ(chain_to_anchor(leaf.cert(), {unrelated.cert(), intermediate.cert()}, root_and_ca)
                .below_anchor,
            (std::vector<X509*>{leaf.cert(), root_and_ca[1].get()}));
  // Sent, and not in the bundle: the sent one.
  cert_chain root_only;
  root_only.emplace_back(X509_dup(root.cert()));
  EXPECT_EQ(
      chain_to_anchor(leaf.cert(), {unrelated.cert(), intermediate.cert()}, root_only).below_anchor,
      (std::vector<X509*>{leaf.cert(), intermediate.cert()}));
  // The issuing CA trusted alone (partial chain): it is the anchor, nothing above the leaf.
  cert_chain ca_only;
  ca_only.emplace_back(X509_dup(intermediate.cert()));
  auto partial = chain_to_anchor(leaf.cert(), {intermediate.cert()}, ca_only);
  EXPECT_EQ(partial.below_anchor, (std::vector<X509*>{leaf.cert()}));
  EXPECT_EQ(partial.anchor, ca_only[0].get());
  // No issuer anywhere: no anchor, and the leaf alone.
  auto nowhere = chain_to_anchor(leaf.cert(), {}, root_only);
  EXPECT_EQ(nowhere.below_anchor, (std::vector<X509*>{leaf.cert()}));
  EXPECT_EQ(nowhere.anchor, nullptr);
  // And the stale root CRL is found for the intermediate the bundle supplied.
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now + 3600));
  crls.push_back(crl_of(root, now - 10));
  EXPECT_EQ(stale_crl_file(crls, chain_to_anchor(leaf.cert(), {}, root_and_ca), true, 0, now),
            "CRL has expired (depth 1: CN=Stale Intermediate,O=mtlsd tests) (crl file)");
}

// A CA re-keyed under the same name: the new key's current CRL does not stand in for the old
// key's stale one, which a full handshake would have found for a certificate the old key
// issued (the two were matched by issuer name alone).
TEST_F(StaleCrlFile, AnotherKeysCrlUnderTheSameNameIsNotTheIssuers) {
  auto rekeyed = test::make_intermediate(root, {.cn = "Stale Intermediate"});
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now - 10));
  crls.push_back(crl_of(rekeyed, now + 3600));
  EXPECT_EQ(stale_crl_file(crls, chain, false, 0, now),
            "CRL has expired (depth 0: CN=resumed,O=mtlsd tests) (crl file)");
  // A leaf of the new key is judged by the new key's CRL.
  auto new_leaf = test::make_leaf(rekeyed, {.cn = "resumed"});
  rebuilt_chain under_new{{new_leaf.cert(), rekeyed.cert()}, root.cert()};
  EXPECT_EQ(stale_crl_file(crls, under_new, false, 0, now), "");
  // Without a known issuer (the walk found none) the name alone still decides.
  rebuilt_chain issuer_unknown{{leaf.cert()}, nullptr};
  EXPECT_EQ(stale_crl_file(crls, issuer_unknown, false, 0, now), "");
}

// Review: the other side of a re-key, as OpenSSL has it (crl_akid_check's same-path rule). The
// bundle trusts the old root; the peer sends the new key's link certificate (the root's name,
// signed by the old key) and a leaf the new key issued. The old key's CRL, named for the same
// issuer and matching a certificate further up the path, still counts: current, while the new
// key's is stale, the full handshake admitted, and so must the resumption be.
TEST_F(StaleCrlFile, ACrlOfTheSameNameFurtherUpThePathCounts) {
  auto link = test::make_intermediate(root, {.cn = "Stale Root"});  // the root re-keyed
  auto new_leaf = test::make_leaf(link, {.cn = "resumed"});
  cert_chain bundle;
  bundle.emplace_back(X509_dup(root.cert()));
  auto path = chain_to_anchor(new_leaf.cert(), {link.cert()}, bundle);
  ASSERT_EQ(path.below_anchor, (std::vector<X509*>{new_leaf.cert(), link.cert()}));
  ASSERT_EQ(path.anchor, bundle[0].get());
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(link, now - 10));
  EXPECT_EQ(stale_crl_file(crls, path, false, 0, now),
            "CRL has expired (depth 0: CN=resumed,O=mtlsd tests) (crl file)");
  crls.push_back(crl_of(root, now + 3600));
  EXPECT_EQ(stale_crl_file(crls, path, false, 0, now), "");
}

}  // namespace
}  // namespace mtlsd::tls::revocation
