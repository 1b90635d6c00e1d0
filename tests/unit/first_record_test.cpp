// proxy::wait_for_first_record on a real loopback TCP connection: it returns once the first TLS
// record is whole — at once when it is already there at accept, after it arrives when nothing
// was there (the epoll_ctl-free wait), and after the rest of a partial record arrives
// (SO_RCVLOWAT) — and returns at once, for the handshake to name, when the peer closes or sends
// something that is not a handshake record. Cancelling the wait ends it with operation_aborted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <optional>
#include <string>

#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/tls_stream.hpp"

namespace {

namespace asio = boost::asio;
using mtlsd::net::error_code;
using mtlsd::net::stream_socket;

// A handshake record of `body` bytes: type 22, version 3.1, length.
std::string record(std::size_t body) {
  std::string r{'\x16', '\x03', '\x01', static_cast<char>(body >> 8), static_cast<char>(body)};
  return r + std::string(body, 'c');
}

struct FirstRecord : ::testing::Test {
  asio::io_context ioc{1};
  stream_socket server{ioc};
  int client = -1;
  std::optional<error_code> result;

  void SetUp() override {
    auto acceptor = mtlsd::net::open_acceptor(
        ioc, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), false);
    const auto bound = acceptor.local_endpoint();
    client = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(client, 0);
    ASSERT_EQ(::connect(client, bound.data(), bound.size()), 0);
    server = acceptor.accept();
  }
  void TearDown() override {
    if (client >= 0) ::close(client);
  }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(client, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  void start() {
    asio::co_spawn(ioc, mtlsd::proxy::wait_for_first_record(server),
                   [this](std::exception_ptr e, error_code ec) {
                     ASSERT_FALSE(e);
                     result = ec;
                   });
  }
  // Runs the loop until the wait returned, for at most 5 s.
  void run_until_done() {
    for (int i = 0; i < 50 && !result; ++i)
      ioc.run_one_for(std::chrono::milliseconds(100));
  }
  // Bytes waiting in the server's receive buffer: the wait must leave them all to OpenSSL.
  int queued() {
    int n = -1;
    ::ioctl(server.native_handle(), FIONREAD, &n);
    return n;
  }
  // Until `n` bytes sent are in the server's buffer (loopback delivers them at once; at most
  // 1 s), so that a wait started next finds them there.
  void until_queued(std::size_t n) {
    for (int i = 0; i < 1000 && queued() < static_cast<int>(n); ++i)
      ::usleep(1000);
    ASSERT_EQ(queued(), static_cast<int>(n));
  }
};

TEST_F(FirstRecord, AWholeRecordAlreadyThereReturnsInTheFirstTurn) {
  const auto hello = record(300);
  send(hello);
  until_queued(hello.size());
  start();
  ioc.poll();
  ASSERT_TRUE(result) << "the record was there: no wait for readiness";
  EXPECT_FALSE(*result);
  EXPECT_EQ(queued(), static_cast<int>(hello.size())) << "peeked, not read";
}

TEST_F(FirstRecord, ARecordThatComesLaterEndsTheWait) {
  start();
  ioc.poll();
  EXPECT_FALSE(result) << "nothing sent yet";
  send(record(300));
  run_until_done();
  ASSERT_TRUE(result) << "woken by the record's arrival";
  EXPECT_FALSE(*result);
}

TEST_F(FirstRecord, APartialRecordWaitsForItsRest) {
  const auto hello = record(2000);
  send(hello.substr(0, 700));
  until_queued(700);  // there before the wait looks: its edge is still in epoll's ready list
  start();
  ioc.poll();
  for (int i = 0; i < 3; ++i)
    ioc.run_one_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(result) << "1,300 bytes of the record still to come";
  send(hello.substr(700));
  run_until_done();
  ASSERT_TRUE(result);
  EXPECT_FALSE(*result);
  EXPECT_EQ(queued(), static_cast<int>(hello.size()));
}

TEST_F(FirstRecord, APeerThatClosesEndsTheWaitForTheHandshakeToName) {
  start();
  ioc.poll();
  ::close(client);
  client = -1;
  run_until_done();
  ASSERT_TRUE(result);
  EXPECT_FALSE(*result);
}

TEST_F(FirstRecord, APeerThatClosesMidRecordEndsTheWait) {
  send(record(2000).substr(0, 700));
  until_queued(700);
  start();
  ioc.poll();
  EXPECT_FALSE(result) << "1,300 bytes of the record still to come";
  ::close(client);
  client = -1;
  run_until_done();
  ASSERT_TRUE(result) << "the close wakes the wait below its mark";
  EXPECT_FALSE(*result);
}

TEST_F(FirstRecord, NotAHandshakeRecordEndsTheWaitAtOnce) {
  const std::string not_tls = "GET / HTTP/1.1\r\n";
  send(not_tls);
  until_queued(not_tls.size());
  start();
  ioc.poll();
  ASSERT_TRUE(result);
  EXPECT_FALSE(*result);
}

TEST_F(FirstRecord, CancellingTheSocketEndsTheWait) {
  start();
  ioc.poll();
  server.cancel();
  run_until_done();
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, asio::error::operation_aborted);
}

}  // namespace
