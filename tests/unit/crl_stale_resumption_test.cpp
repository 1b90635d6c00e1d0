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
  std::vector<X509*> chain{leaf.cert(), intermediate.cert()};

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
  EXPECT_EQ(chain_to_anchor(leaf.cert(), {}, root_and_ca),
            (std::vector<X509*>{leaf.cert(), root_and_ca[1].get()}));
  // Sent with an extra certificate: ignored; the bundle's copy of the CA comes first.
  EXPECT_EQ(chain_to_anchor(leaf.cert(), {unrelated.cert(), intermediate.cert()}, root_and_ca),
            (std::vector<X509*>{leaf.cert(), root_and_ca[1].get()}));
  // Sent, and not in the bundle: the sent one.
  cert_chain root_only;
  root_only.emplace_back(X509_dup(root.cert()));
  EXPECT_EQ(chain_to_anchor(leaf.cert(), {unrelated.cert(), intermediate.cert()}, root_only),
            (std::vector<X509*>{leaf.cert(), intermediate.cert()}));
  // The issuing CA trusted alone (partial chain): it is the anchor, nothing above the leaf.
  cert_chain ca_only;
  ca_only.emplace_back(X509_dup(intermediate.cert()));
  EXPECT_EQ(chain_to_anchor(leaf.cert(), {intermediate.cert()}, ca_only),
            (std::vector<X509*>{leaf.cert()}));
  // And the stale root CRL is found for the intermediate the bundle supplied.
  std::vector<x509_crl_ptr> crls;
  crls.push_back(crl_of(intermediate, now + 3600));
  crls.push_back(crl_of(root, now - 10));
  EXPECT_EQ(stale_crl_file(crls, chain_to_anchor(leaf.cert(), {}, root_and_ca), true, 0, now),
            "CRL has expired (depth 1: CN=Stale Intermediate,O=mtlsd tests) (crl file)");
}

}  // namespace
}  // namespace mtlsd::tls::revocation
