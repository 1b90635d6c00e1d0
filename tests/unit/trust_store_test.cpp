// What a chain of a peer is built to when the trust is SPIFFE bundles (tls/trust_store.hpp,
// tls_context::trust_for): its own trust domain's bundle, else every bundle.
#include <gtest/gtest.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

#include "mtlsd/tls/context.hpp"
#include "test_pki.hpp"

namespace mtlsd::tls {
namespace {

using namespace mtlsd::test;

TEST(TrustFor, APeersChainIsRebuiltFromItsOwnTrustDomainsBundle) {
  const credential b_root = make_root_ca({.cn = "b.org root"});
  const credential c_root = make_root_ca({.cn = "c.org root"});
  tls_context t;
  std::vector<spiffe_anchor> anchors;
  anchors.push_back({"b.org", up_ref(b_root.cert())});
  anchors.push_back({"c.org", up_ref(c_root.cert())});
  t.trust_by_domain = group_by_domain(anchors);
  t.trust.push_back(up_ref(b_root.cert()));
  t.trust.push_back(up_ref(c_root.cert()));

  const credential c_peer = make_leaf(c_root, {.cn = "c", .uri_sans = {"spiffe://c.org/w"}});
  const cert_chain& own = t.trust_for(c_peer.cert());
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(X509_cmp(own.front().get(), c_root.cert()), 0);
  // No SPIFFE ID, or a trust domain without a bundle here: every bundle (it is refused anyway).
  const credential no_id = make_leaf(c_root, {.cn = "x"});
  EXPECT_EQ(&t.trust_for(no_id.cert()), &t.trust);
  const credential elsewhere = make_leaf(c_root, {.cn = "d", .uri_sans = {"spiffe://d.org/w"}});
  EXPECT_EQ(&t.trust_for(elsewhere.cert()), &t.trust);
  // CA files: no bundles by domain, `trust` for everyone.
  tls_context files;
  EXPECT_EQ(&files.trust_for(c_peer.cert()), &files.trust);
}

}  // namespace
}  // namespace mtlsd::tls
