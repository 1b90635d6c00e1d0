#pragma once
// The fixture of the reactor-level wait tests (edge_wait, read_drain, shared_edge_wait): a
// connected AF_UNIX stream pair, `near` an Asio socket in the test's one-thread io_context, `far`
// a plain descriptor the test writes to as the peer.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <string_view>

namespace mtlsd::test {

struct SocketPairTest : ::testing::Test {
  boost::asio::io_context ioc{1};
  boost::asio::generic::stream_protocol::socket near{ioc};
  int far = -1;

  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    near.assign(boost::asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    far = fds[1];
  }
  void TearDown() override {
    if (far >= 0) ::close(far);
  }
  void send_from_far(std::string_view s = "x") {
    ASSERT_EQ(::write(far, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  }
};

}  // namespace mtlsd::test
