// The revocation service keeps an OCSP revocation however many other certificates it is asked
// about: a responder on loopback answers with responses built here (test_ocsp.hpp), and the
// service's OCSP cache holds a single entry, so every other answer would push a revocation out.
#include <gtest/gtest.h>
#include <openssl/ocsp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <ctime>
#include <exception>
#include <string>
#include <vector>

#include "mtlsd/reason.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "test_ocsp.hpp"
#include "test_pki.hpp"

namespace {

namespace asio = boost::asio;
namespace rev = mtlsd::tls::revocation;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using mtlsd::test::credential;

// Answers each POST with `answer` (a DER OCSP response), one request per connection.
struct responder {
  explicit responder(asio::io_context& ioc)
      : acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0}) {}
  tcp::acceptor acceptor;
  std::string answer;
  int requests = 0;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/";
  }

  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(as_tuple(use_awaitable));
      if (ec) co_return;
      std::string buf;
      auto [rec, head] = co_await asio::async_read_until(sock, asio::dynamic_buffer(buf),
                                                         "\r\n\r\n", as_tuple(use_awaitable));
      if (rec) continue;
      const auto at = buf.find("Content-Length: ");
      const std::size_t length = at == std::string::npos ? 0 : std::stoul(buf.substr(at + 16));
      if (buf.size() < head + length)
        co_await asio::async_read(sock, asio::dynamic_buffer(buf),
                                  asio::transfer_exactly(head + length - buf.size()),
                                  as_tuple(use_awaitable));
      ++requests;
      const std::string response =
          "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: " +
          std::to_string(answer.size()) + "\r\nConnection: close\r\n\r\n" + answer;
      co_await asio::async_write(sock, asio::buffer(response), as_tuple(use_awaitable));
    }
  }
};

struct kept_fixture {
  asio::io_context ioc;
  responder ocsp{ioc};
  rev::service svc{ioc.get_executor(), {}, rev::service_limits{.ocsp_entries = 1}, false};
  credential ca = mtlsd::test::make_root_ca({.cn = "OCSP cache CA"});
  credential revoked = mtlsd::test::make_leaf(ca, {.cn = "revoked"});
  credential other = mtlsd::test::make_leaf(ca, {.cn = "other"});

  kept_fixture() { asio::co_spawn(ioc, ocsp.serve(), asio::detached); }
  ~kept_fixture() { svc.stop(); }

  // The service's verdict on `leaf` under `ocsp: leaf` and on_unavailable: allow (where a lost
  // revocation would admit), after the responder is set to answer `status` about it.
  // `stapled_good`: client mode, the remote stapled a verified "good" for `leaf`.
  rev::verdict check(const credential& leaf, int status, bool stapled_good = false) {
    const std::time_t now = mtlsd::test::now();
    ocsp.answer =
        mtlsd::test::ocsp_response(ca, leaf, status, now - 60, now + mtlsd::test::hours(1));
    rev::check_request req;
    req.chain.push_back(mtlsd::tls::up_ref(leaf.cert()));
    req.chain.push_back(mtlsd::tls::up_ref(ca.cert()));
    req.pol.ocsp = mtlsd::config::ocsp_mode::leaf;
    req.pol.ocsp_responder = ocsp.url();
    req.pol.timeout = std::chrono::seconds(5);
    req.pol.soft_fail = true;
    req.leaf_stapled_good = stapled_good;
    rev::verdict out;
    bool done = false;
    asio::co_spawn(ioc, svc.check(std::move(req)), [&](std::exception_ptr e, rev::verdict v) {
      EXPECT_FALSE(e);
      out = std::move(v);
      done = true;
    });
    while (!done && ioc.run_one() > 0) {
    }
    return out;
  }
};

// Review: a revocation lived in the same LRU as every other answer; once pushed out, the
// responder's later "unknown" (or no answer, under on_unavailable: allow) admitted the peer.
TEST(OcspRevocationKept, AnswersAboutOtherCertificatesDoNotPushItOut) {
  kept_fixture f;
  EXPECT_EQ(f.check(f.revoked, V_OCSP_CERTSTATUS_REVOKED).refusal, mtlsd::reason::revoked);
  EXPECT_EQ(f.check(f.other, V_OCSP_CERTSTATUS_GOOD).refusal, std::nullopt);
  ASSERT_EQ(f.ocsp.requests, 2);
  const rev::verdict again = f.check(f.revoked, V_OCSP_CERTSTATUS_UNKNOWN);
  EXPECT_EQ(again.refusal, mtlsd::reason::revoked) << again.detail;
  EXPECT_EQ(again.ocsp, rev::status::revoked);
  EXPECT_EQ(f.ocsp.requests, 2);  // known for good: the responder is not asked again
}

// Review: a good staple was the leaf's OCSP answer without a look at what the OCSP client knew,
// so a remote stapling an old "good" it kept was admitted though known revoked.
TEST(OcspRevocationKept, AGoodStapleDoesNotLiftAKnownRevocation) {
  kept_fixture f;
  EXPECT_EQ(f.check(f.revoked, V_OCSP_CERTSTATUS_REVOKED).refusal, mtlsd::reason::revoked);
  const rev::verdict stapled = f.check(f.revoked, V_OCSP_CERTSTATUS_GOOD, true);
  EXPECT_EQ(stapled.refusal, mtlsd::reason::revoked) << stapled.detail;
  EXPECT_EQ(stapled.source, "ocsp " + f.ocsp.url());
  // Without a known revocation the staple is the answer, and the responder is not asked.
  const rev::verdict other = f.check(f.other, V_OCSP_CERTSTATUS_REVOKED, true);
  EXPECT_EQ(other.refusal, std::nullopt) << other.detail;
  EXPECT_EQ(other.source, "stapled ocsp");
  EXPECT_EQ(f.ocsp.requests, 1);
}

// Review: a stapled "revoked" refused its own handshake only; nothing else learnt of it.
TEST(OcspRevocationKept, AStapledRevocationIsKeptAndPublished) {
  kept_fixture f;
  std::vector<rev::event_ptr> events;
  f.svc.subscribe([&](rev::event_ptr e) { events.push_back(std::move(e)); });
  const std::time_t now = mtlsd::test::now();
  rev::policy pol;
  pol.ocsp = mtlsd::config::ocsp_mode::leaf;
  pol.ocsp_responder = f.ocsp.url();
  f.svc.learn_stapled_revocation(
      mtlsd::tls::up_ref(f.revoked.cert()), mtlsd::tls::up_ref(f.ca.cert()),
      mtlsd::test::ocsp_response(f.ca, f.revoked, V_OCSP_CERTSTATUS_REVOKED, now - 60, now + 60),
      pol);
  f.ioc.poll();  // runs the subscription and the hand-over, both posted
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0]->source, "stapled ocsp");
  EXPECT_EQ(events[0]->serials.size(), 1U);
  // Known for good: a later good staple and the responder's "good" both give way to it, and
  // the responder is never asked.
  const rev::verdict stapled = f.check(f.revoked, V_OCSP_CERTSTATUS_GOOD, true);
  EXPECT_EQ(stapled.refusal, mtlsd::reason::revoked) << stapled.detail;
  EXPECT_EQ(stapled.source, "stapled ocsp");
  EXPECT_EQ(f.check(f.revoked, V_OCSP_CERTSTATUS_GOOD).refusal, mtlsd::reason::revoked);
  EXPECT_EQ(f.ocsp.requests, 0);
  // A staple that is not a verified "revoked" teaches nothing.
  f.svc.learn_stapled_revocation(
      mtlsd::tls::up_ref(f.other.cert()), mtlsd::tls::up_ref(f.ca.cert()),
      mtlsd::test::ocsp_response(f.ca, f.other, V_OCSP_CERTSTATUS_GOOD, now - 60, now + 60), pol);
  f.ioc.poll();
  EXPECT_EQ(events.size(), 1U);
}

}  // namespace
