// What a parsed CRL is charged against the distribution-point cache's byte bound
// (crl_memory_bytes, tls/revocation/crl.hpp): what OpenSSL really holds, not the DER's size.
#include <gtest/gtest.h>
#include <malloc.h>

#include "mtlsd/tls/revocation/crl.hpp"
#include "test_pki.hpp"

namespace {

namespace revocation = mtlsd::tls::revocation;
namespace pki = mtlsd::test;

std::size_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

std::string der_crl_revoking(std::size_t entries) {
  const pki::credential ca = pki::make_root_ca({.cn = "crl memory CA"});
  pki::crl_spec spec;
  for (std::size_t i = 0; i < entries; ++i)
    spec.revoked.push_back({.serial = 0x1000'0000'0000ull + i * 7919, .revoked_at = 1'700'000'000});
  mtlsd::tls::x509_crl_ptr crl(pki::make_crl(ca, spec));
  return pki::to_der(crl.get());
}

// Review: 10 MB of DER raised RSS by 70 MB, so a 64 MiB bound counted in DER allowed ~450 MB.
TEST(CrlMemory, CountsWhatTheParsedCrlHoldsNotItsDer) {
#ifdef MTLSD_SANITIZER_BUILD
  GTEST_SKIP() << "a sanitizer's allocator is not glibc's: mallinfo2 does not see it";
#endif
  const std::string der = der_crl_revoking(20'000);
  const pki::credential ca = pki::make_root_ca({.cn = "another CA"});
  const pki::credential leaf = pki::make_leaf(ca, {.cn = "not revoked"});
  const std::size_t before = heap_in_use();
  mtlsd::tls::x509_crl_ptr crl = revocation::parse_crl(der);
  ASSERT_TRUE(crl);
  // A lookup sorts the entries and caches their extensions: count that too.
  EXPECT_FALSE(revocation::lookup_crl(crl.get(), leaf.cert()).revoked);
  const std::size_t held = heap_in_use() - before;
  const std::size_t charged = revocation::crl_memory_bytes(der.size());
  EXPECT_GT(held, 4 * der.size());  // why the DER's size is the wrong measure
  EXPECT_GE(charged, held);
  EXPECT_LE(charged, 2 * held);  // and not so cautious that real CRLs no longer fit
}

}  // namespace
