// The revocation service's staple refresh, in-process against a loopback responder that
// counts requests and never has an answer (so the service retries with backoff: 1 s, 2 s ...).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <string>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/tls/revocation/stapling.hpp"
#include "test_pki.hpp"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// Answers every request with 503 and counts them.
class failing_responder {
 public:
  explicit failing_responder(asio::io_context& ioc)
      : acc_(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    accept();
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acc_.local_endpoint().port()) + "/";
  }
  int requests = 0;

 private:
  void accept() {
    acc_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      ++requests;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto buf = std::make_shared<std::array<char, 4096>>();
      sock->async_read_some(asio::buffer(*buf), [sock, buf](boost::system::error_code,
                                                            std::size_t) {
        static const std::string reply =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        asio::async_write(*sock, asio::buffer(reply),
                          [sock](boost::system::error_code, std::size_t) {});
      });
      accept();
    });
  }
  tcp::acceptor acc_;
};

void run_for(
    asio::io_context& ioc, std::chrono::steady_clock::duration d,
    const std::function<bool()>& done = [] { return false; }) {
  const auto stop_at = std::chrono::steady_clock::now() + d;
  while (!done() && std::chrono::steady_clock::now() < stop_at) {
    ioc.restart();
    ioc.run_one_for(10ms);
  }
}

TEST(StaplingService, ARetiredSlotIsNoLongerRefreshedWhileItLives) {
  asio::io_context ioc;
  failing_responder responder(ioc);
  auto root = mtlsd::test::make_root_ca({.cn = "Staple Root"});
  auto leaf =
      mtlsd::test::make_leaf(root, {.cn = "proxy", .usage = mtlsd::test::key_usage::server});
  mtlsd::tls::revocation::service svc(ioc.get_executor(), nullptr);
  // Held here as a connection holds its (superseded) runtime.
  auto slot = std::make_shared<mtlsd::tls::revocation::staple_slot>();
  svc.staple(slot, mtlsd::tls::up_ref(leaf.cert()), mtlsd::tls::up_ref(root.cert()),
             responder.url(), std::chrono::milliseconds(500), "t");
  run_for(ioc, 3s, [&] { return responder.requests == 1; });
  ASSERT_EQ(responder.requests, 1);
  slot->retire();        // a reload published a new runtime
  run_for(ioc, 2500ms);  // the first retry would come after 1 s, the second after 2 s more
  EXPECT_EQ(responder.requests, 1) << "a superseded runtime's staple was still fetched";
  svc.stop();
  run_for(ioc, 100ms);
}

TEST(StaplingService, ALiveSlotIsRetried) {
  asio::io_context ioc;
  failing_responder responder(ioc);
  auto root = mtlsd::test::make_root_ca({.cn = "Staple Root"});
  auto leaf =
      mtlsd::test::make_leaf(root, {.cn = "proxy", .usage = mtlsd::test::key_usage::server});
  mtlsd::tls::revocation::service svc(ioc.get_executor(), nullptr);
  auto slot = std::make_shared<mtlsd::tls::revocation::staple_slot>();
  svc.staple(slot, mtlsd::tls::up_ref(leaf.cert()), mtlsd::tls::up_ref(root.cert()),
             responder.url(), std::chrono::milliseconds(500), "t");
  run_for(ioc, 4s, [&] { return responder.requests >= 2; });
  EXPECT_GE(responder.requests, 2);  // the test above can fail: retries do happen
  svc.stop();
  run_for(ioc, 100ms);
}

// A reload that keeps our certificate hands its new slot the staple of the runtime before
// (daemon's inherit_staples).
std::shared_ptr<mtlsd::tls::revocation::staple_slot> inherited_slot(std::time_t this_update,
                                                                    std::time_t next_update) {
  auto slot = std::make_shared<mtlsd::tls::revocation::staple_slot>();
  auto r = std::make_shared<mtlsd::tls::revocation::staple_slot::response>();
  r->der = "inherited";
  r->this_update = this_update;
  r->next_update = next_update;
  slot->set(std::move(r));
  return slot;
}

TEST(StaplingService, AnInheritedStapleDoesUntilHalfwayThroughItsValidity) {
  asio::io_context ioc;
  failing_responder responder(ioc);
  auto root = mtlsd::test::make_root_ca({.cn = "Staple Root"});
  auto leaf =
      mtlsd::test::make_leaf(root, {.cn = "proxy", .usage = mtlsd::test::key_usage::server});
  mtlsd::tls::revocation::service svc(ioc.get_executor(), nullptr);
  const std::time_t now = std::time(nullptr);
  auto slot = inherited_slot(now - 60, now + 3600);
  svc.staple(slot, mtlsd::tls::up_ref(leaf.cert()), mtlsd::tls::up_ref(root.cert()),
             responder.url(), std::chrono::milliseconds(500), "t");
  // Its first fetch needs none: a reload would not wait.
  run_for(ioc, 1500ms, [&] { return slot->wait_first_fetch(std::chrono::steady_clock::now()); });
  EXPECT_TRUE(slot->wait_first_fetch(std::chrono::steady_clock::now()));
  run_for(ioc, 1500ms, [&] { return responder.requests > 0; });
  EXPECT_EQ(responder.requests, 0) << "a reload's staple was fetched again at once";
  EXPECT_EQ(slot->get()->der, "inherited");
  svc.stop();
  run_for(ioc, 100ms);
}

TEST(StaplingService, AnInheritedStaplePastHalfwayIsRefreshedAtOnce) {
  asio::io_context ioc;
  failing_responder responder(ioc);
  auto root = mtlsd::test::make_root_ca({.cn = "Staple Root"});
  auto leaf =
      mtlsd::test::make_leaf(root, {.cn = "proxy", .usage = mtlsd::test::key_usage::server});
  mtlsd::tls::revocation::service svc(ioc.get_executor(), nullptr);
  const std::time_t now = std::time(nullptr);
  auto slot = inherited_slot(now - 3000, now + 600);
  svc.staple(slot, mtlsd::tls::up_ref(leaf.cert()), mtlsd::tls::up_ref(root.cert()),
             responder.url(), std::chrono::milliseconds(500), "t");
  run_for(ioc, 3s, [&] { return responder.requests == 1; });
  EXPECT_EQ(responder.requests, 1);
  // The responder failed: the staple, still valid, stays.
  run_for(ioc, 100ms);
  EXPECT_EQ(slot->get()->der, "inherited");
  svc.stop();
  run_for(ioc, 100ms);
}

TEST(StaplingService, AFailedFirstFetchEndsTheWaitForIt) {
  asio::io_context ioc;
  failing_responder responder(ioc);
  auto root = mtlsd::test::make_root_ca({.cn = "Staple Root"});
  auto leaf =
      mtlsd::test::make_leaf(root, {.cn = "proxy", .usage = mtlsd::test::key_usage::server});
  mtlsd::tls::revocation::service svc(ioc.get_executor(), nullptr);
  auto slot = std::make_shared<mtlsd::tls::revocation::staple_slot>();
  EXPECT_FALSE(slot->wait_first_fetch(std::chrono::steady_clock::now()));
  svc.staple(slot, mtlsd::tls::up_ref(leaf.cert()), mtlsd::tls::up_ref(root.cert()),
             responder.url(), std::chrono::milliseconds(500), "t");
  run_for(ioc, 3s, [&] { return slot->wait_first_fetch(std::chrono::steady_clock::now()); });
  EXPECT_TRUE(slot->wait_first_fetch(std::chrono::steady_clock::now()));
  EXPECT_EQ(responder.requests, 1);
  EXPECT_EQ(slot->get(), nullptr);
  svc.stop();
  run_for(ioc, 100ms);
}

}  // namespace
