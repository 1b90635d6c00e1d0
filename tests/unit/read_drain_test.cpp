// net::known_drained on a real socket pair in a real io_context: a short read or EAGAIN makes the
// socket known empty until epoll reports it again; a FIN that came with the last bytes (or
// after them) keeps it from being known empty; an untracked socket is never known empty.
#include "mtlsd/net/read_drain.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>

#include "mtlsd/net/edge_wait.hpp"
#include "socket_pair.hpp"

namespace {

namespace asio = boost::asio;
using mtlsd::net::known_drained;
using mtlsd::net::stream_socket;

struct ReadDrain : mtlsd::test::SocketPairTest {
  // Keeps poll() running the reactor (it returns at once when there is no work).
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  // One read as a tracked reader makes it, told to note_read. Returns what it got.
  ssize_t read_once(std::size_t asked = 64) {
    char buf[64];
    const ssize_t n = ::recv(near.native_handle(), buf, asked, MSG_DONTWAIT);
    mtlsd::net::note_read(near, asked, n, errno);
    return n;
  }
};

#if MTLSD_EDGE_WAIT

TEST_F(ReadDrain, AShortReadMakesItKnownEmptyUntilTheNextReport) {
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  send_from_far("GET");
  ioc.poll();  // epoll reports the bytes
  EXPECT_FALSE(known_drained(near));
  EXPECT_EQ(read_once(), 3);
  EXPECT_TRUE(known_drained(near)) << "a short read emptied it, and nothing came since";
  ioc.poll();
  EXPECT_TRUE(known_drained(near)) << "no report without new bytes";
  send_from_far("more");
  ioc.poll();
  EXPECT_FALSE(known_drained(near)) << "new bytes were reported";
  EXPECT_EQ(read_once(), 4);
  EXPECT_TRUE(known_drained(near));
}

TEST_F(ReadDrain, EagainMakesItKnownEmpty) {
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  EXPECT_EQ(read_once(), -1);
  EXPECT_TRUE(known_drained(near));
}

TEST_F(ReadDrain, AFullReadDoesNot) {
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  send_from_far("abcdef");
  ioc.poll();
  EXPECT_EQ(read_once(3), 3);
  EXPECT_FALSE(known_drained(near)) << "it got all it asked for: there may be more";
}

TEST_F(ReadDrain, AFinThatCameWithTheLastBytesKeepsItFromBeingKnownEmpty) {
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  send_from_far("GET");
  ASSERT_EQ(::shutdown(far, SHUT_WR), 0);
  ioc.poll();  // one report: the bytes and the FIN together
  EXPECT_EQ(read_once(), 3);
  EXPECT_FALSE(known_drained(near))
      << "the FIN raises no edge of its own: the next read must see it";
  EXPECT_EQ(read_once(), 0);
}

TEST_F(ReadDrain, AFinAfterTheShortReadEndsKnownEmpty) {
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  send_from_far("GET");
  ioc.poll();
  EXPECT_EQ(read_once(), 3);
  ASSERT_TRUE(known_drained(near));
  ASSERT_EQ(::shutdown(far, SHUT_WR), 0);
  ioc.poll();
  EXPECT_FALSE(known_drained(near));
}

// TCP urgent data ends a read short at its mark with bytes still behind it: no edge would come
// for those (review of 04ea38c).
TEST(ReadDrainTcp, AReadShortAtAnUrgentMarkDoesNotEmptyIt) {
  asio::io_context ioc{1};
  auto work = asio::make_work_guard(ioc);
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::address_v4::loopback(), 0});
  asio::ip::tcp::socket far(ioc);
  far.connect(acceptor.local_endpoint());
  stream_socket near(ioc);
  {
    asio::ip::tcp::socket accepted = acceptor.accept();
    const int fd = accepted.release();
    near.assign(asio::generic::stream_protocol(AF_INET, SOCK_STREAM), fd);
  }
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();
  ASSERT_EQ(::send(far.native_handle(), "abc", 3, 0), 3);
  ASSERT_EQ(::send(far.native_handle(), "!", 1, MSG_OOB), 1);
  ASSERT_EQ(::send(far.native_handle(), "def", 3, 0), 3);
  // Until all of it is in (the sender's queue holds nothing unacknowledged), then one report for
  // it. Loopback acknowledges at once; the wait is for the softirq, not the network.
  int unacknowledged = 1;
  for (int tries = 0; tries < 200 && unacknowledged > 0; ++tries) {
    ASSERT_EQ(::ioctl(far.native_handle(), TIOCOUTQ, &unacknowledged), 0);
    if (unacknowledged > 0) ::poll(nullptr, 0, 10);
  }
  ASSERT_EQ(unacknowledged, 0);
  ioc.poll();
  char buf[64];
  const ssize_t got = ::recv(near.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
  mtlsd::net::note_read(near, sizeof buf, got, errno);
  ASSERT_EQ(got, 3) << "the read stops at the urgent mark";
  EXPECT_FALSE(known_drained(near)) << "\"def\" is still there";
}

TEST_F(ReadDrain, ABytesAndFinBeforeTrackingAreReportedAgain) {
  send_from_far("GET");
  ASSERT_EQ(::shutdown(far, SHUT_WR), 0);
  ioc.poll();  // reported without EPOLLRDHUP: the reactor did not ask for it yet
  ASSERT_TRUE(mtlsd::net::track_read_drain(near));
  ioc.poll();  // tracking re-arms epoll, which reports the socket again, FIN included
  EXPECT_EQ(read_once(), 3);
  EXPECT_FALSE(known_drained(near));
}

#endif

TEST_F(ReadDrain, AnUntrackedSocketIsNeverKnownEmpty) {
  ioc.poll();
  EXPECT_EQ(read_once(), -1);
  EXPECT_FALSE(known_drained(near));
}

}  // namespace
