// net::reserve_reactor_records: the records it leaves on Asio's free list serve the sockets
// that come after it — each registered, woken by its data and closed as usual — and a worker
// can reserve and then run as before. (The memory it gives back after a burst is measured by
// bench/run.sh pending_silent, not here.)
#include "mtlsd/net/reactor_reserve.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <vector>

namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using socket_type = asio::generic::stream_protocol::socket;

TEST(ReactorReserve, ReservedRecordsServeTheSocketsThatFollow) {
  asio::io_context ioc{1};
  constexpr int reserved = 16;
  mtlsd::net::reserve_reactor_records(ioc, reserved);
  // More sockets than records: the reserved ones first, then new ones, all alike.
  constexpr int sockets = reserved + 4;
  std::vector<std::unique_ptr<socket_type>> near;
  std::vector<int> far;
  int woken = 0;
  for (int i = 0; i < sockets; ++i) {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    auto s = std::make_unique<socket_type>(ioc);
    s->assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    s->async_wait(socket_type::wait_read, [&](error_code ec) { woken += ec ? 1000 : 1; });
    near.push_back(std::move(s));
    far.push_back(fds[1]);
  }
  ioc.poll();
  EXPECT_EQ(woken, 0) << "no data yet";
  for (int fd : far)
    ASSERT_EQ(::write(fd, "x", 1), 1);
  for (int i = 0; i < sockets && woken < sockets; ++i)
    ioc.run_one_for(std::chrono::seconds(2));
  EXPECT_EQ(woken, sockets) << "every socket, on a reserved record or not, woken once by its data";
  for (auto& s : near)
    s->close();
  for (int fd : far)
    ::close(fd);
}

TEST(ReactorReserve, ASocketClosedWhileWaitingIsCancelledAsUsual) {
  asio::io_context ioc{1};
  mtlsd::net::reserve_reactor_records(ioc, 4);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  socket_type s(ioc);
  s.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
  error_code result;
  bool done = false;
  s.async_wait(socket_type::wait_read, [&](error_code ec) {
    result = ec;
    done = true;
  });
  ioc.poll();
  s.close();
  ioc.poll();
  ASSERT_TRUE(done);
  EXPECT_EQ(result, asio::error::operation_aborted);
  ::close(fds[1]);
}

}  // namespace
