// net::shared_edge_wait on a real socket pair in a real io_context: a waiter that joins a queued
// wait completes on the same event, in the same completion, right after the wait's own handler
// (a second wait queued behind it would take a completion of its own); cancellation, the
// socket's cancel() and the io_context's end reach both; the owner may go first.
#include "mtlsd/net/shared_edge_wait.hpp"

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "socket_pair.hpp"

namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using mtlsd::net::shared_edge_wait;

struct SharedEdgeWait : mtlsd::test::SocketPairTest {
  // Keeps poll() running the reactor (it returns at once when there is no work).
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::vector<std::string> order;  // which handler ran, with its result, in the order they ran

  // Starts the shared wait with a first handler that records itself.
  void start(shared_edge_wait& w) {
    w.start(near,
            [this](error_code ec) { order.push_back(ec ? "first:" + ec.message() : "first"); });
  }
  auto record_as(std::string name) {
    return [this, name](error_code ec) { order.push_back(ec ? name + ":" + ec.message() : name); };
  }
};

#if MTLSD_EDGE_WAIT

TEST_F(SharedEdgeWait, AJoinedWaiterCompletesRightAfterTheWaitInOneCompletion) {
  shared_edge_wait w;
  start(w);
  ioc.poll();
  ASSERT_TRUE(w.queued());
  w.async_join(record_as("joined"));
  ioc.poll();
  EXPECT_TRUE(order.empty()) << "nothing to read yet";
  send_from_far();
  // One completion runs both: the joined waiter costs no completion of its own, so no poll of
  // epoll is queued in front of it (the point of joining).
  ASSERT_EQ(ioc.run_one_for(std::chrono::seconds(5)), 1u);
  EXPECT_EQ(order, (std::vector<std::string>{"first", "joined"}));
  EXPECT_FALSE(w.queued());
}

// One join per wait: once joined, the wait is still queued but no longer joinable, so a second
// reader (tls_stream's write, when OpenSSL asks it for input) waits on its own.
TEST_F(SharedEdgeWait, JoinableUntilSomeoneJoins) {
  shared_edge_wait w;
  EXPECT_FALSE(w.joinable()) << "not started";
  start(w);
  ioc.poll();
  EXPECT_TRUE(w.joinable());
  w.async_join(record_as("joined"));
  EXPECT_TRUE(w.queued());
  EXPECT_FALSE(w.joinable());
  send_from_far();
  ASSERT_EQ(ioc.run_one_for(std::chrono::seconds(5)), 1u);
  EXPECT_EQ(order, (std::vector<std::string>{"first", "joined"}));
  EXPECT_FALSE(w.joinable());
}

TEST_F(SharedEdgeWait, AnAsioWaitQueuedBehindItInsteadTakesACompletionOfItsOwn) {
  // The contrast that makes the test above mean something: the same event, a second operation.
  shared_edge_wait w;
  start(w);
  near.async_wait(asio::socket_base::wait_read, record_as("queued behind"));
  ioc.poll();
  send_from_far();
  ASSERT_EQ(ioc.run_one_for(std::chrono::seconds(5)), 1u);
  EXPECT_EQ(order, (std::vector<std::string>{"first"}));
  ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(order, (std::vector<std::string>{"first", "queued behind"}));
}

TEST_F(SharedEdgeWait, WithoutAJoinOnlyTheFirstHandlerRuns) {
  shared_edge_wait w;
  start(w);
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(order, (std::vector<std::string>{"first"}));
  EXPECT_FALSE(w.queued());
}

TEST_F(SharedEdgeWait, ACoroutineJoinsAndResumes) {
  shared_edge_wait w;
  start(w);
  ioc.poll();
  std::optional<error_code> resumed;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec] = co_await w.async_join(asio::as_tuple(asio::use_awaitable));
        resumed = ec;
      },
      asio::detached);
  ioc.poll();
  EXPECT_FALSE(resumed);
  send_from_far();
  for (int i = 0; i < 3 && !resumed; ++i)
    ioc.run_one_for(std::chrono::seconds(5));
  ASSERT_TRUE(resumed);
  EXPECT_FALSE(*resumed);
}

TEST_F(SharedEdgeWait, CancellingTheJoinedWaiterEndsBoth) {
  shared_edge_wait w;
  start(w);
  ioc.poll();
  asio::cancellation_signal signal;
  w.async_join(asio::bind_cancellation_slot(signal.slot(), record_as("joined")));
  ioc.poll();
  EXPECT_TRUE(order.empty());
  signal.emit(asio::cancellation_type::terminal);
  ioc.poll();
  EXPECT_EQ(order,
            (std::vector<std::string>{"first:Operation canceled", "joined:Operation canceled"}));
  EXPECT_FALSE(w.queued());
}

TEST_F(SharedEdgeWait, TheSocketsCancelEndsBoth) {
  shared_edge_wait w;
  start(w);
  ioc.poll();
  w.async_join(record_as("joined"));
  near.cancel();
  ioc.poll();
  EXPECT_EQ(order,
            (std::vector<std::string>{"first:Operation canceled", "joined:Operation canceled"}));
}

TEST_F(SharedEdgeWait, ACancelledWaitIsNotJoinableWhileItsCompletionIsOnItsWay) {
  // A reader that joined it would end with operation_aborted from a cancellation that came before
  // it started; it queues a wait of its own instead, which the cancellation did not reach.
  shared_edge_wait w;
  start(w);
  ioc.poll();
  ASSERT_TRUE(w.queued());
  near.cancel();
  EXPECT_FALSE(w.queued()) << "cancelled: its completion is posted, not yet run";
  ioc.poll();
  EXPECT_EQ(order, (std::vector<std::string>{"first:Operation canceled"}));
}

TEST_F(SharedEdgeWait, ANewWaitAfterACancelledOneIsNotLostWhenTheOldCompletes) {
  // The cancelled wait's completion, still on its way when the next starts, must not take the
  // new wait's place from its owner: the new one stays joinable, and is let go by the destructor.
  shared_edge_wait w;
  start(w);
  ioc.poll();
  near.cancel();
  w.start(near, record_as("second watch"));
  ioc.poll();
  EXPECT_EQ(order, (std::vector<std::string>{"first:Operation canceled"}));
  EXPECT_TRUE(w.queued()) << "the old wait's completion took the new one from its owner";
  w.async_join(record_as("joined"));
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(order,
            (std::vector<std::string>{"first:Operation canceled", "second watch", "joined"}));
}

TEST_F(SharedEdgeWait, TheOwnerMayGoFirst) {
  {
    shared_edge_wait w;
    start(w);
    ioc.poll();
    w.async_join(record_as("joined"));
  }
  send_from_far();
  ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(order, (std::vector<std::string>{"first", "joined"}));
}

TEST_F(SharedEdgeWait, TheIoContextsEndDestroysTheJoinedHandler) {
  // What a coroutine waiting in a join holds (its frame, and the connection in it) goes with the
  // io_context, as with any handler Asio holds: nothing keeps it alive in a cycle.
  auto held = std::make_shared<int>(0);
  std::weak_ptr<int> watch = held;
  auto ioc2 = std::make_unique<asio::io_context>(1);
  auto w = std::make_unique<shared_edge_wait>();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  {
    asio::generic::stream_protocol::socket mine(*ioc2);
    mine.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    w->start(mine, [](error_code) {});
    ioc2->poll();
    w->async_join([held = std::move(held)](error_code) {});
    ASSERT_FALSE(watch.expired());
  }  // closed: the wait's completion (operation_aborted) is queued for the loop's next turn
  ::close(fds[1]);
  ioc2.reset();  // no next turn: the completion is destroyed, not run
  EXPECT_TRUE(watch.expired());
  EXPECT_FALSE(w->queued()) << "the operation told its owner it is gone";
}

// HTTP mode's upstream watch holds its joining coroutine's handler as it is, not type-erased
// (awaitable_shared_edge_wait): it must still resume in the wait's one completion, and still be
// cancelled through the coroutine's cancellation slot.
TEST_F(SharedEdgeWait, AnAwaitableWaitResumesItsCoroutineInTheSameCompletion) {
  mtlsd::net::awaitable_shared_edge_wait w;
  w.start(near, record_as("first"));
  ioc.poll();
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec] = co_await w.async_join(asio::as_tuple(asio::use_awaitable));
        order.push_back(ec ? "joined:" + ec.message() : "joined");
      },
      asio::detached);
  ioc.poll();
  EXPECT_TRUE(order.empty()) << "nothing to read yet";
  send_from_far();
  ASSERT_EQ(ioc.run_one_for(std::chrono::seconds(5)), 1u);
  EXPECT_EQ(order, (std::vector<std::string>{"first", "joined"}));
  EXPECT_FALSE(w.queued());
}

TEST_F(SharedEdgeWait, CancellingTheJoinedCoroutineEndsTheAwaitableWait) {
  mtlsd::net::awaitable_shared_edge_wait w;
  w.start(near, record_as("first"));
  ioc.poll();
  asio::cancellation_signal signal;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec] = co_await w.async_join(asio::as_tuple(asio::use_awaitable));
        order.push_back(ec ? "joined:" + ec.message() : "joined");
      },
      asio::bind_cancellation_slot(signal.slot(), asio::detached));
  ioc.poll();
  ASSERT_TRUE(order.empty());
  signal.emit(asio::cancellation_type::terminal);
  for (int i = 0; i < 3 && order.size() < 2; ++i)
    ioc.run_one_for(std::chrono::seconds(5));
  EXPECT_EQ(order,
            (std::vector<std::string>{"first:Operation canceled", "joined:Operation canceled"}));
  EXPECT_FALSE(w.queued());
}

#endif  // MTLSD_EDGE_WAIT

}  // namespace
