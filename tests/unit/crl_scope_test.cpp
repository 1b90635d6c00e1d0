// Whether a CRL fetched from a distribution point speaks for a certificate (check_crl_scope,
// tls/revocation/crl.hpp): a CRL whose Issuing Distribution Point names a distribution point is
// one partition of its CA's certificates, complete for the certificates naming that point only.
#include <gtest/gtest.h>

#include "mtlsd/tls/revocation/crl.hpp"
#include "test_pki.hpp"

namespace {

namespace revocation = mtlsd::tls::revocation;
namespace pki = mtlsd::test;

constexpr const char* partition_a = "http://crl.example.org/part-a.crl";
constexpr const char* partition_b = "http://crl.example.org/part-b.crl";

std::string scope_of(const pki::credential& ca, const pki::credential& leaf, std::string idp) {
  mtlsd::tls::x509_crl_ptr crl(pki::make_crl(ca, {.issuing_distribution_point = std::move(idp)}));
  return revocation::check_crl_scope(crl.get(), leaf.cert());
}

// Review (RFC 5280 6.3.3 (b)(2)(i)): partition B's CRL, validly signed, was taken as a complete
// answer for a certificate of partition A, so one who could serve it on the plain-HTTP fetch
// path turned a revoked certificate of A into "good".
TEST(CrlScope, APartitionSpeaksOnlyForTheCertificatesNamingIt) {
  const pki::credential ca = pki::make_root_ca({.cn = "partitioning CA"});
  const pki::credential in_a =
      pki::make_leaf(ca, {.cn = "in partition a", .crl_distribution_point = partition_a});
  EXPECT_EQ(scope_of(ca, in_a, partition_a), "");
  EXPECT_NE(scope_of(ca, in_a, partition_b).find("distribution point"), std::string::npos)
      << scope_of(ca, in_a, partition_b);
  // A CRL without an Issuing Distribution Point covers the CA's whole scope.
  EXPECT_EQ(scope_of(ca, in_a, ""), "");
  // A certificate naming no distribution point is in no partition.
  const pki::credential unnamed = pki::make_leaf(ca, {.cn = "no distribution point"});
  EXPECT_NE(scope_of(ca, unnamed, partition_a), "");
}

}  // namespace
