// daemon::latest_mailbox: what reaches the control thread when a source's news comes faster than
// it is applied (svid_sources.cpp: SVID updates from a Workload API stream).
#include "mtlsd/daemon/latest_mailbox.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

namespace mtlsd::daemon {
namespace {

using mailbox = latest_mailbox<int, std::string>;

TEST(LatestMailbox, OneDeliveryIsQueuedForAnyNumberOfUpdatesAndTheNewestIsTaken) {
  mailbox box;
  int deliveries = 0;
  for (int i = 1; i <= 1000; ++i)
    if (box.put_update(i)) ++deliveries;
  EXPECT_EQ(deliveries, 1);
  auto news = box.take();
  ASSERT_TRUE(news.update);
  EXPECT_EQ(*news.update, 1000);
  EXPECT_FALSE(news.error);
  // Taken: the next piece queues a delivery again, and nothing older comes back.
  EXPECT_TRUE(box.put_update(1001));
  EXPECT_EQ(*box.take().update, 1001);
  auto none = box.take();
  EXPECT_FALSE(none.update);
  EXPECT_FALSE(none.error);
}

TEST(LatestMailbox, AnUpdateAndAnErrorAreBothKeptInTheOrderTheyCame) {
  mailbox box;
  EXPECT_TRUE(box.put_update(1));
  EXPECT_FALSE(box.put_error("stream ended"));
  auto news = box.take();
  EXPECT_EQ(*news.update, 1);
  EXPECT_EQ(*news.error, "stream ended");
  EXPECT_FALSE(news.error_first);

  EXPECT_TRUE(box.put_error("first"));
  EXPECT_FALSE(box.put_update(2));
  EXPECT_FALSE(box.put_error("second"));  // the newest error, now after the update
  news = box.take();
  EXPECT_EQ(*news.update, 2);
  EXPECT_EQ(*news.error, "second");
  EXPECT_FALSE(news.error_first);

  EXPECT_TRUE(box.put_error("third"));
  EXPECT_FALSE(box.put_update(3));
  news = box.take();
  EXPECT_TRUE(news.error_first);
}

// From another thread, as the Workload API client puts them: every put that returned true is
// matched by exactly one take that saw news, and the last update put is the last one taken.
TEST(LatestMailbox, PutsFromAnotherThreadLoseNoDeliveryAndEndWithTheNewest) {
  mailbox box;
  std::atomic<int> queued{0};
  std::thread producer([&] {
    for (int i = 1; i <= 20000; ++i)
      if (box.put_update(i)) queued.fetch_add(1);
  });
  int taken = 0, last = 0;
  while (producer.joinable()) {
    if (queued.load() > taken) {
      auto news = box.take();
      ASSERT_TRUE(news.update);
      EXPECT_GT(*news.update, last);
      last = *news.update;
      ++taken;
    }
    if (last == 20000) producer.join();
  }
  EXPECT_EQ(queued.load(), taken);
}

}  // namespace
}  // namespace mtlsd::daemon
