// net::async_wait_drained on a real socket pair in a real io_context: after the caller found the
// socket empty (EAGAIN), it sleeps until data comes — also on a socket new to
// the reactor, and after epoll reported earlier data that the caller has read — and it is
// cancelled the ways Asio's own waits are. (The epoll_ctl it saves is counted by
// bench/run.sh --syscalls, not here.)
#include "mtlsd/net/edge_wait.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <optional>
#include <vector>

#include "socket_pair.hpp"

namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using socket_type = asio::generic::stream_protocol::socket;

struct EdgeWait : mtlsd::test::SocketPairTest {
  void SetUp() override {
    SocketPairTest::SetUp();
    near.non_blocking(true);
  }

  // Reads until the socket would block, as the precondition asks.
  void drain() {
    char buf[256];
    error_code ec;
    while (!ec)
      near.read_some(asio::buffer(buf), ec);
    ASSERT_EQ(ec, asio::error::would_block);
  }
  // Queues an edge wait on `near` that records its result in `done`.
  void wait_drained(std::optional<error_code>& done) {
    mtlsd::net::async_wait_drained(near, socket_type::wait_read,
                                   [&done](error_code ec) { done = ec; });
  }
  // Runs the loop until `finished()` holds: two completions at most, each within 2 s.
  template <class Finished>
  void run_until(Finished finished) {
    for (int i = 0; i < 2 && !finished(); ++i)
      ioc.run_one_for(std::chrono::seconds(2));
  }
};

TEST_F(EdgeWait, CompletesWhenDataArrivesAfterWouldBlock) {
  drain();
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(near, socket_type::wait_read, [&](error_code ec) { done = ec; });
  ioc.poll();
  EXPECT_FALSE(done) << "nothing to read yet";
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  ASSERT_TRUE(done);
  EXPECT_FALSE(*done);
}

TEST_F(EdgeWait, SecondWaitAfterDrainingSleepsUntilMoreData) {
  drain();
  int completed = 0;
  auto wait = [&] {
    mtlsd::net::async_wait_drained(near, socket_type::wait_read,
                                   [&](error_code ec) { completed += ec ? 100 : 1; });
  };
  wait();
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  ASSERT_EQ(completed, 1);
  ioc.restart();  // it ran out of work
  drain();
  wait();
  ioc.poll();
  EXPECT_EQ(completed, 1) << "the data was read: no new edge, no completion";
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(completed, 2);
}

TEST_F(EdgeWait, SleepsAfterEpollReportedDataTheCallerHasRead) {
  // Data comes and epoll reports it while nobody waits (a timer keeps the loop turning): the
  // reactor then offers the next operation a try at once, which the wait declines.
  send_from_far();
  asio::steady_timer turn(ioc, std::chrono::milliseconds(1));
  turn.async_wait([](error_code) {});
  ioc.run();
  ioc.restart();
  drain();
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(near, socket_type::wait_read, [&](error_code ec) { done = ec; });
  ioc.poll();
  EXPECT_FALSE(done) << "the data was read: nothing to wake for";
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  ASSERT_TRUE(done);
  EXPECT_FALSE(*done);
}

TEST_F(EdgeWait, AnotherWaitQueuedBehindItCompletesOnTheSameEvent) {
  // The relay's two pumps can wait on one socket in one direction: this wait, then Asio's. One
  // event must complete both; Asio would stop at an operation that says "exhausted".
  drain();
  std::optional<error_code> edge_done;
  std::optional<error_code> asio_done;
  wait_drained(edge_done);
  near.async_wait(socket_type::wait_read, [&](error_code ec) { asio_done = ec; });
  ioc.poll();
  EXPECT_FALSE(edge_done);
  EXPECT_FALSE(asio_done);
  send_from_far();
  run_until([&] { return edge_done && asio_done; });
  ASSERT_TRUE(edge_done);
  ASSERT_TRUE(asio_done) << "the wait queued behind the edge wait missed the event";
  EXPECT_FALSE(*asio_done);
}

TEST_F(EdgeWait, AReadQueuedBehindItGetsItsDataOnTheSameEvent) {
  // HTTP mode leaves its watch on an idle upstream queued while the request goes up, so that the
  // response's read queues behind it (Asio tries a read at once only when nothing is queued):
  // the response's one event must complete the watch and then perform the read.
  drain();
  std::optional<error_code> edge_done;
  std::optional<std::pair<error_code, std::size_t>> read_done;
  char byte = 0;
  wait_drained(edge_done);
  near.async_read_some(asio::buffer(&byte, 1), [&](error_code ec, std::size_t n) {
    read_done = std::pair{ec, n};
  });
  ioc.poll();
  EXPECT_FALSE(edge_done);
  EXPECT_FALSE(read_done);
  send_from_far();
  run_until([&] { return edge_done && read_done; });
  ASSERT_TRUE(edge_done);
  EXPECT_FALSE(*edge_done);
  ASSERT_TRUE(read_done) << "the read queued behind the edge wait missed the event";
  EXPECT_FALSE(read_done->first);
  EXPECT_EQ(read_done->second, 1u);
  EXPECT_EQ(byte, 'x');
}

TEST_F(EdgeWait, SocketCancelEndsTheWait) {
  drain();
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(near, socket_type::wait_read, [&](error_code ec) { done = ec; });
  ioc.poll();
  near.cancel();
  ioc.poll();
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, asio::error::operation_aborted);
}

TEST_F(EdgeWait, PerOperationCancellationEndsTheWait) {
  drain();
  asio::cancellation_signal signal;
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(
      near, socket_type::wait_read,
      asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) { done = ec; }));
  ioc.poll();
  EXPECT_FALSE(done);
  signal.emit(asio::cancellation_type::terminal);
  ioc.poll();
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, asio::error::operation_aborted);
}

TEST_F(EdgeWait, WaitsForWritableAfterAWriteWouldBlock) {
  // Fill the socket until a write would block, then free room from the far side.
  std::vector<char> chunk(65536, 'y');
  error_code ec;
  while (!ec)
    near.write_some(asio::buffer(chunk), ec);
  ASSERT_EQ(ec, asio::error::would_block);
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(near, socket_type::wait_write, [&](error_code e) { done = e; });
  ioc.poll();
  EXPECT_FALSE(done);
  std::vector<char> sink(1 << 20);
  while (::recv(far, sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
  }
  ioc.run_one_for(std::chrono::seconds(5));
  ASSERT_TRUE(done);
  EXPECT_FALSE(*done);
}

#if MTLSD_EDGE_WAIT
// The reactor a wait starts on is read from the socket's registration record, not looked up: it
// must be the one of the socket's own io_context, also with another io_context about.
TEST_F(EdgeWait, StartsOnTheReactorOfTheSocketsOwnIoContext) {
  namespace ad = asio::detail;
  asio::io_context other{1};
  socket_type elsewhere(other);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  elsewhere.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(&mtlsd::net::edge_wait_detail::reactor_of(near), &asio::use_service<ad::reactor>(ioc));
  EXPECT_EQ(&mtlsd::net::edge_wait_detail::reactor_of(elsewhere),
            &asio::use_service<ad::reactor>(other));
  EXPECT_NE(&asio::use_service<ad::reactor>(ioc), &asio::use_service<ad::reactor>(other));
}

// A closed socket has no registration record: the io_context's reactor is looked up, and the
// wait ends with the error Asio's own would give.
TEST_F(EdgeWait, AWaitOnAClosedSocketEndsWithAnError) {
  near.close();
  EXPECT_EQ(&mtlsd::net::edge_wait_detail::reactor_of(near),
            &asio::use_service<asio::detail::reactor>(ioc));
  std::optional<error_code> done;
  mtlsd::net::async_wait_drained(near, socket_type::wait_read, [&](error_code ec) { done = ec; });
  ioc.poll();
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, asio::error::bad_descriptor);
}
#endif

}  // namespace
