// net::resolver against tiny DNS servers on loopback, in process: one that never answers (a DNS
// outage) and one that answers with a TTL. Proves that a lookup is bounded by the caller,
// cancellable, concurrent, and cached for its TTL only.
#include "mtlsd/net/resolver.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using steady = std::chrono::steady_clock;
using mtlsd::net::resolve_result;

// A UDP DNS server on 127.0.0.1 (its own thread, blocking sockets). `silent` reads queries and
// never answers. Otherwise: A queries get 127.0.0.2 with `ttl` (an address /etc/hosts would
// never give), AAAA queries get no records, and names starting with "nx" get NXDOMAIN.
class fake_dns {
 public:
  explicit fake_dns(bool silent, std::uint32_t ttl = 1) : silent_(silent), ttl_(ttl) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("fake_dns: cannot bind");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~fake_dns() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  // A and AAAA queries seen for `name`.
  int queries(const std::string& name) {
    std::lock_guard lock(mutex_);
    return seen_[name];
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      unsigned char q[512];
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      ssize_t n = ::recvfrom(fd_, q, sizeof q, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 17) continue;
      // The question: labels from offset 12, then QTYPE and QCLASS.
      std::string name;
      std::size_t i = 12;
      while (i < static_cast<std::size_t>(n) && q[i] != 0) {
        const std::size_t l = q[i];
        if (!name.empty()) name += '.';
        name.append(reinterpret_cast<const char*>(q + i + 1), l);
        i += l + 1;
      }
      const std::size_t qend = i + 5;  // zero label, QTYPE, QCLASS
      if (qend > static_cast<std::size_t>(n)) continue;
      const int qtype = q[i + 1] << 8 | q[i + 2];
      {
        std::lock_guard lock(mutex_);
        ++seen_[name];
      }
      if (silent_) continue;
      std::vector<unsigned char> r(q, q + qend);
      const bool nx = name.rfind("nx", 0) == 0;
      const bool answer = !nx && qtype == 1;
      r[2] = 0x81;                      // QR, RD
      r[3] = nx ? 0x83 : 0x80;          // RA, RCODE 3 = NXDOMAIN
      r[4] = 0, r[5] = 1;               // QDCOUNT
      r[6] = 0, r[7] = answer ? 1 : 0;  // ANCOUNT
      r[8] = r[9] = r[10] = r[11] = 0;
      if (answer) {
        const unsigned char rr[] = {0xC0,
                                    12,
                                    0,
                                    1,
                                    0,
                                    1,
                                    static_cast<unsigned char>(ttl_ >> 24),
                                    static_cast<unsigned char>(ttl_ >> 16),
                                    static_cast<unsigned char>(ttl_ >> 8),
                                    static_cast<unsigned char>(ttl_),
                                    0,
                                    4,
                                    127,
                                    0,
                                    0,
                                    2};
        r.insert(r.end(), std::begin(rr), std::end(rr));
      }
      ::sendto(fd_, r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
    }
  }

  bool silent_;
  std::uint32_t ttl_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::map<std::string, int> seen_;
  std::thread thread_;
};

mtlsd::net::resolver_options options_for(const fake_dns& server) {
  mtlsd::net::resolver_options o;
  o.servers = {{"127.0.0.1", server.port()}};
  return o;
}

long long ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

// Runs `body` as a coroutine on a fresh io_context (so a fresh resolver) until it is done;
// rethrows what it throws.
template <class F>
void run(F body) {
  asio::io_context ioc;
  std::exception_ptr error;
  asio::co_spawn(ioc, body(), [&](std::exception_ptr e) { error = e; });
  ioc.run();
  if (error) std::rethrow_exception(error);
}

// `resolve(name)` raced against a timer of `limit`: how long it took and whether the timer won.
asio::awaitable<std::pair<long long, bool>> bounded(std::string name,
                                                    std::chrono::milliseconds limit) {
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  const auto start = steady::now();
  auto r =
      co_await (mtlsd::net::resolve(name) || timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  co_return std::pair{ms_since(start), r.index() == 1};
}

TEST(Resolver, ALookupIsBoundedByTheCallersTimer) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  run([&]() -> asio::awaitable<void> {
    auto [ms, timed_out] = co_await bounded("silent.test", 200ms);
    EXPECT_TRUE(timed_out);
    EXPECT_GE(ms, 195);
    EXPECT_LT(ms, 450) << "the timer did not end the lookup";
  });
  EXPECT_GE(silent.queries("silent.test"), 1) << "the query never reached the server";
}

TEST(Resolver, ConcurrentLookupsEndAtTheirOwnDeadlinesNotInTurn) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  asio::io_context ioc;
  std::vector<std::pair<long long, bool>> results(3);
  const std::chrono::milliseconds limits[] = {200ms, 300ms, 400ms};
  const auto start = steady::now();
  for (int i = 0; i < 3; ++i)
    asio::co_spawn(
        ioc,
        [&, i]() -> asio::awaitable<void> {
          results[i] = co_await bounded("slow" + std::to_string(i) + ".test", limits[i]);
        },
        asio::detached);
  ioc.run();
  EXPECT_LT(ms_since(start), 900) << "the lookups were served one after another";
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(results[i].second);
    EXPECT_GE(results[i].first, limits[i].count() - 5) << "lookup " << i;
    EXPECT_LT(results[i].first, limits[i].count() + 250) << "lookup " << i;
  }
}

TEST(Resolver, ConcurrentLookupsOfOneNameShareAQueryAndEachLeavesOnTime) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  asio::io_context ioc;
  std::vector<std::pair<long long, bool>> results(3);
  for (int i = 0; i < 3; ++i)
    asio::co_spawn(
        ioc,
        [&, i]() -> asio::awaitable<void> {
          results[i] = co_await bounded("same.test", std::chrono::milliseconds(100 * (i + 1)));
        },
        asio::detached);
  ioc.run();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(results[i].second);
    EXPECT_GE(results[i].first, 100 * (i + 1) - 5);
    EXPECT_LT(results[i].first, 100 * (i + 1) + 250);
  }
  // One A and one AAAA query, not three of each.
  EXPECT_LE(silent.queries("same.test"), 2);
}

TEST(Resolver, CancellingThroughTheSlotReturnsAtOnce) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  asio::io_context ioc;
  asio::cancellation_signal cancel;
  std::optional<resolve_result> got;
  long long ms = -1;
  const auto start = steady::now();
  asio::co_spawn(
      ioc, mtlsd::net::resolve("cancelled.test"),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, resolve_result r) {
        EXPECT_FALSE(e);
        got = std::move(r);
        ms = ms_since(start);
      }));
  asio::steady_timer kill(ioc, 100ms);
  kill.async_wait(
      [&](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
  ioc.run();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->ec, asio::error::operation_aborted);
  EXPECT_GE(ms, 95);
  EXPECT_LT(ms, 350);
}

TEST(Resolver, AnAnswerIsCachedForItsTtlAndFetchedAgainAfter) {
  fake_dns server(false, 1);
  mtlsd::net::set_resolver_options(options_for(server));
  run([&]() -> asio::awaitable<void> {
    auto& r = mtlsd::net::resolver::of(co_await asio::this_coro::executor);
    auto first = co_await r.resolve("ttl.test");
    EXPECT_FALSE(first.ec) << first.ec.message();
    EXPECT_EQ(first.addresses.size(), 1u);
    if (first.addresses.empty()) co_return;
    EXPECT_EQ(first.addresses[0].to_string(), "127.0.0.2");
    EXPECT_FALSE(first.from_cache);
    const int asked = server.queries("ttl.test");
    EXPECT_GE(asked, 1);

    auto second = co_await r.resolve("TTL.test");  // names are case-insensitive
    EXPECT_TRUE(second.from_cache);
    EXPECT_EQ(second.addresses.size(), 1u);
    EXPECT_EQ(server.queries("ttl.test"), asked) << "a fresh answer was asked for again";

    asio::steady_timer wait(co_await asio::this_coro::executor, 1100ms);  // past the 1 s TTL
    co_await wait.async_wait(asio::use_awaitable);
    auto third = co_await r.resolve("ttl.test");
    EXPECT_FALSE(third.ec);
    EXPECT_FALSE(third.from_cache);
    EXPECT_GT(server.queries("ttl.test"), asked);
    EXPECT_EQ(r.queries_started(), 2u);
  });
}

TEST(Resolver, NoSuchNameIsCachedBriefly) {
  fake_dns server(false);
  auto o = options_for(server);
  o.negative_ttl = 1s;
  mtlsd::net::set_resolver_options(o);
  run([&]() -> asio::awaitable<void> {
    auto first = co_await mtlsd::net::resolve("nxname.test");
    EXPECT_EQ(first.ec, boost::system::error_code(ARES_ENOTFOUND, mtlsd::net::dns_category()));
    EXPECT_TRUE(first.addresses.empty());
    const int asked = server.queries("nxname.test");
    auto second = co_await mtlsd::net::resolve("nxname.test");
    EXPECT_EQ(second.ec, first.ec);
    EXPECT_TRUE(second.from_cache);
    EXPECT_EQ(server.queries("nxname.test"), asked);
  });
}

TEST(Resolver, ATimeoutIsNotCachedAndEndsWithinCaresBudget) {
  fake_dns silent(true);
  auto o = options_for(silent);
  o.attempt_timeout = 100ms;
  o.attempts = 1;
  mtlsd::net::set_resolver_options(o);
  run([&]() -> asio::awaitable<void> {
    const auto start = steady::now();
    auto r = co_await mtlsd::net::resolve("gone.test");
    EXPECT_EQ(r.ec, boost::system::error_code(ARES_ETIMEOUT, mtlsd::net::dns_category()));
    EXPECT_LT(ms_since(start), 1000);
    auto again = co_await mtlsd::net::resolve("gone.test");
    EXPECT_FALSE(again.from_cache);
  });
}

TEST(Resolver, EtcHostsIsHonouredWithoutAskingTheServer) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  run([&]() -> asio::awaitable<void> {
    auto [ms, timed_out] = co_await bounded("localhost", 1000ms);
    EXPECT_FALSE(timed_out) << "localhost (in /etc/hosts) waited for the silent server";
  });
}

TEST(Resolver, AContextDestroyedWithALookupPendingEndsCleanly) {
  fake_dns silent(true);
  mtlsd::net::set_resolver_options(options_for(silent));
  bool finished = false;
  {
    asio::io_context ioc;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          co_await mtlsd::net::resolve("pending.test");
          finished = true;
        },
        asio::detached);
    ioc.run_for(100ms);
  }
  EXPECT_FALSE(finished);
}

}  // namespace
