// The revocation service completes a chain that stops short of its trust anchor (a resumed
// session whose anchor is not in the listener's bundle: check_request::ends_at_anchor false)
// from the CA certificates of the chains it saw verified. It kept one certificate per name, so
// during a CA re-key that keeps the CA's name, a verified chain of one key made the other
// key's resumed leaves "issuer unknown" (review). The responder named here refuses connections:
// a completed leaf gets that for its answer, one the service cannot complete "issuer unknown".
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <exception>
#include <string>
#include <vector>

#include "mtlsd/reason.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "test_pki.hpp"

namespace {

namespace asio = boost::asio;
namespace rev = mtlsd::tls::revocation;
using mtlsd::test::credential;

constexpr std::string_view issuer_unknown = "issuer unknown";

struct completion_fixture {
  asio::io_context ioc;
  rev::service svc{ioc.get_executor(), {}, {}, false};
  credential root = mtlsd::test::make_root_ca({.cn = "Completion Root"});
  credential old_ca = mtlsd::test::make_intermediate(root, {.cn = "Completion Issuing CA"});
  credential new_ca = mtlsd::test::make_intermediate(root, {.cn = "Completion Issuing CA"});
  credential a = mtlsd::test::make_leaf(old_ca, {.cn = "client of the old key"});
  credential b = mtlsd::test::make_leaf(new_ca, {.cn = "client of the new key"});

  ~completion_fixture() { svc.stop(); }

  // The verdict on `chain` (leaf first) under `ocsp: leaf`.
  rev::verdict check(const std::vector<const credential*>& chain, bool ends_at_anchor) {
    rev::check_request req;
    for (const credential* c : chain)
      req.chain.push_back(mtlsd::tls::up_ref(c->cert()));
    req.ends_at_anchor = ends_at_anchor;
    req.pol.ocsp = mtlsd::config::ocsp_mode::leaf;
    req.pol.ocsp_responder = "http://127.0.0.1:1/";
    req.pol.timeout = std::chrono::seconds(2);
    rev::verdict out;
    bool done = false;
    ioc.restart();  // run out of work by the previous check
    asio::co_spawn(ioc, svc.check(std::move(req)), [&](std::exception_ptr e, rev::verdict v) {
      EXPECT_FALSE(e);
      out = std::move(v);
      done = true;
    });
    while (!done && ioc.run_one() > 0) {
    }
    EXPECT_TRUE(done);
    return out;
  }
};

TEST(RevocationChainCompletion, EachKeyOfACaReKeyedUnderItsNameCompletesItsOwnLeaves) {
  completion_fixture f;
  f.check({&f.a, &f.old_ca, &f.root}, true);
  f.check({&f.b, &f.new_ca, &f.root}, true);  // the same name, the other key: learnt last
  for (const credential* leaf : {&f.a, &f.b}) {
    const rev::verdict v = f.check({leaf}, false);
    EXPECT_EQ(v.refusal, mtlsd::reason::revocation_unavailable) << v.detail;
    EXPECT_EQ(v.detail.find(issuer_unknown), std::string::npos) << v.detail;
  }
}

TEST(RevocationChainCompletion, ALeafOfACaNeverSeenHasAnUnknownIssuer) {
  completion_fixture f;
  f.check({&f.b, &f.new_ca, &f.root}, true);
  const rev::verdict v = f.check({&f.a}, false);
  EXPECT_NE(v.detail.find(issuer_unknown), std::string::npos) << v.detail;
}

}  // namespace
