// The descriptor budget at start: raised to the hard limit, and the arithmetic of what
// max_connections needs (issue 11: 2 per connection plus overhead).
#include "mtlsd/daemon/fd_limit.hpp"
#include "mtlsd/proxy/fd_gate.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace {

using mtlsd::config::configuration;
using mtlsd::config::listener;

configuration with_listeners(std::initializer_list<int> max_connections) {
  configuration c;
  for (int m : max_connections) {
    listener l;
    l.max_connections = m;
    c.listeners.push_back(l);
  }
  return c;
}

TEST(FdLimit, NeedsTwoPerConnectionOfEveryListenerPlusOverhead) {
  const auto c = with_listeners({100, 50});
  EXPECT_EQ(mtlsd::daemon::fds_needed(c, 2), 2u * 150 + mtlsd::daemon::fd_overhead(c, 2));
  EXPECT_GT(mtlsd::daemon::fd_overhead(c, 2), 2u * 2);  // at least the listening sockets
}

// An HTTP/2 client of an HTTP/1.1 upstream holds an upstream connection per exchange in
// progress (at most 8) and keeps up to 4 idle: 13 with its own socket.
TEST(FdLimit, CountsTheUpstreamConnectionsOfHttp2ClientsOfAnHttp11Upstream) {
  auto c = with_listeners({100});
  c.listeners[0].http.enabled = true;
  EXPECT_EQ(mtlsd::proxy::fds_per_connection(c.listeners[0]), 13);
  EXPECT_EQ(mtlsd::daemon::fds_needed(c, 1), 13u * 100 + mtlsd::daemon::fd_overhead(c, 1));
  c.listeners[0].http.max_upstream_connections_per_client = 2;  // and at most 2 idle
  EXPECT_EQ(mtlsd::proxy::fds_per_connection(c.listeners[0]), 5);
  c.listeners[0].http.max_upstream_connections_per_client = 20;
  EXPECT_EQ(mtlsd::proxy::fds_per_connection(c.listeners[0]), 25);
  c.listeners[0].http.upstream_protocol = mtlsd::config::http_upstream_protocol::same;  // h2c
  EXPECT_EQ(mtlsd::proxy::fds_per_connection(c.listeners[0]), 2);
  c.listeners[0].http.upstream_protocol = mtlsd::config::http_upstream_protocol::http1;
  c.listeners[0].http.protocols = {"http/1.1"};
  EXPECT_EQ(mtlsd::proxy::fds_per_connection(c.listeners[0]), 2);
}

TEST(FdLimit, RaisesTheSoftLimitToTheHardOne) {
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max < 128) GTEST_SKIP() << "hard limit too low to lower the soft one";
  rlimit lowered = rl;
  lowered.rlim_cur = 100;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  const auto b = mtlsd::daemon::raise_fd_limit(with_listeners({10}), 1);
  rlimit now{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(b.soft_before, 100u);
  EXPECT_EQ(now.rlim_cur, rl.rlim_max);
  EXPECT_EQ(b.soft, rl.rlim_max);
  EXPECT_EQ(b.needed, mtlsd::daemon::fds_needed(with_listeners({10}), 1));
}

}  // namespace
