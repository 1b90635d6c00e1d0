// The relay's look at a socket nobody reads while a write waits (proxy::detail::peer_state):
// a reset ends the relay, a FIN only starts the half-close deadline. Real TCP over loopback:
// what poll() says after a FIN or a reset is the kernel's, and differs from a unix socket's.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "mtlsd/proxy/relay.hpp"

namespace {

namespace asio = boost::asio;
using mtlsd::proxy::detail::peer_end;
using mtlsd::proxy::detail::peer_state;

struct TcpPair : ::testing::Test {
  asio::io_context ioc{1};
  mtlsd::proxy::stream_socket near{ioc};
  int far = -1;

  void SetUp() override {
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::ip::tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    asio::ip::tcp::socket server = acceptor.accept();
    near = mtlsd::proxy::stream_socket(std::move(server));
    far = client.release();
  }
  void TearDown() override {
    if (far >= 0) ::close(far);
  }
  // Until `near` reports one of `events` (the kernel has processed what `far` did).
  void wait_for(short events) {
    pollfd p{near.native_handle(), static_cast<short>(events | POLLRDHUP), 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
  }
};

TEST_F(TcpPair, AnOpenPeerIsThere) {
  EXPECT_EQ(peer_state(near), peer_end::none);
}

// Review: the relay had shut down its own sending (it passed the other side's end on), and the
// peer's clean FIN then raised POLLHUP, which was taken for a reset: what the peer had sent was
// dropped and the access line said "Connection reset by peer".
TEST_F(TcpPair, AFinAfterOurOwnShutdownIsAFinNotAReset) {
  ASSERT_EQ(::shutdown(near.native_handle(), SHUT_WR), 0);
  ASSERT_EQ(::write(far, "tail", 4), 4);
  ASSERT_EQ(::shutdown(far, SHUT_WR), 0);
  wait_for(POLLHUP);
  EXPECT_EQ(peer_state(near), peer_end::fin);
}

TEST_F(TcpPair, AFinAloneIsAFin) {
  ASSERT_EQ(::shutdown(far, SHUT_WR), 0);
  wait_for(POLLRDHUP);
  EXPECT_EQ(peer_state(near), peer_end::fin);
}

TEST_F(TcpPair, AResetIsAReset) {
  const linger abort_on_close{1, 0};  // close() sends RST
  ASSERT_EQ(::setsockopt(far, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close), 0);
  ::close(far);
  far = -1;
  wait_for(POLLERR);
  EXPECT_EQ(peer_state(near), peer_end::reset);
}

}  // namespace
