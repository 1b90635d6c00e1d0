// net::connect_any (Happy Eyeballs) on loopback: the order addresses are tried in (families
// alternating from the first's), the winner, and the descriptor budget given back. Addresses
// that never answer, the 250 ms delay and cancellation are tested from outside, with the real
// daemon (tests/integration/test_upstream_addresses.py).
#include "mtlsd/net/connect.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace mtlsd::net;

struct attempt_result {
  error_code ec;
  std::string detail;
  stream_endpoint connected_to;
};

attempt_result connect(const std::vector<std::string>& ips, std::uint16_t port, fd_gate* gate) {
  asio::io_context ioc;
  stream_socket sock(ioc);
  std::vector<asio::ip::address> addresses;
  for (const auto& ip : ips)
    addresses.push_back(asio::ip::make_address(ip));
  attempt_result out;
  asio::co_spawn(ioc, connect_any(sock, addresses, port, out.detail, gate, &out.connected_to),
                 [&](std::exception_ptr e, error_code ec) {
                   EXPECT_FALSE(e);
                   out.ec = ec;
                 });
  ioc.run();
  return out;
}

// A port nothing listens on, on any loopback address.
std::uint16_t closed_port() {
  asio::io_context ioc;
  asio::ip::tcp::acceptor probe(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return probe.local_endpoint().port();  // closed when `probe` goes
}

TEST(ConnectAny, FamiliesAlternateFromTheFirstAddresss) {
  const auto port = closed_port();
  const std::string p = std::to_string(port);
  auto r = connect({"127.0.0.1", "127.0.0.2", "::1"}, port, nullptr);
  EXPECT_TRUE(r.ec);
  const auto first = r.detail.find("connect to 127.0.0.1:" + p + ": ");
  const auto second = r.detail.find("connect to [::1]:" + p + ": ");
  const auto third = r.detail.find("connect to 127.0.0.2:" + p + ": ");
  ASSERT_NE(first, std::string::npos) << r.detail;
  ASSERT_NE(second, std::string::npos) << r.detail;
  ASSERT_NE(third, std::string::npos) << r.detail;
  EXPECT_LT(first, second) << r.detail;
  EXPECT_LT(second, third) << r.detail;
}

TEST(ConnectAny, TheFirstToAcceptIsKeptAndTheBudgetGivenBack) {
  asio::io_context ioc;
  asio::ip::tcp::acceptor up(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = up.local_endpoint().port();
  fd_gate gate;
  gate.set_budget(8);
  auto r = connect({"127.0.0.2", "127.0.0.1"}, port, &gate);
  EXPECT_FALSE(r.ec) << r.detail;
  EXPECT_EQ(format_endpoint(r.connected_to), "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(r.detail, "connect to 127.0.0.2:" + std::to_string(port) + ": Connection refused");
  EXPECT_EQ(gate.used(), 0);
}

TEST(FormatEndpoint, AnIpv4ClientOfADualStackSocketIsNamedAsIpv4) {
  const auto named = [](const char* ip, unsigned short port) {
    return format_endpoint(asio::ip::tcp::endpoint(asio::ip::make_address(ip), port));
  };
  EXPECT_EQ(named("::ffff:10.1.2.3", 40000), "10.1.2.3:40000");
  EXPECT_EQ(named("10.1.2.3", 40000), "10.1.2.3:40000");
  EXPECT_EQ(named("::1", 443), "[::1]:443");
  EXPECT_EQ(named("64:ff9b::a01:203", 443), "[64:ff9b::a01:203]:443");  // NAT64: stays IPv6
}

}  // namespace
