// idle_deadline (relay.hpp): how the idle, half-close and request-head deadlines combine into
// the one the session's watchdog enforces.
#include <gtest/gtest.h>

#include "mtlsd/proxy/relay.hpp"

namespace {

using mtlsd::proxy::idle_deadline;
using namespace std::chrono_literals;
using clock_type = idle_deadline::clock;

idle_deadline relaying(clock_type::duration idle, clock_type::duration head_limit) {
  idle_deadline d;
  d.idle = idle;
  d.head_limit = head_limit;
  d.deadline = clock_type::time_point::max();
  d.touch();
  return d;
}

TEST(IdleDeadline, AHeadInProgressCapsTheDeadlineAndActivityDoesNotMoveIt) {
  idle_deadline d = relaying(5min, 1s);
  const auto before = clock_type::now();
  d.start_head();
  EXPECT_LE(d.deadline, clock_type::now() + 1s);
  EXPECT_GE(d.deadline, before + 1s);
  const auto head_by = d.deadline;
  d.touch();  // a byte of the head came
  EXPECT_EQ(d.deadline, head_by);
  d.start_head();  // the next read of the same head: the deadline stays where it began
  EXPECT_EQ(d.deadline, head_by);
}

TEST(IdleDeadline, AWholeHeadGivesTheIdleDeadlineBack) {
  idle_deadline d = relaying(5min, 1s);
  d.start_head();
  d.end_head(true);
  EXPECT_GE(d.deadline, clock_type::now() + 5min - 1s);
  EXPECT_FALSE(d.past_head_by());
  d.start_head();  // the next request's head gets a deadline of its own
  EXPECT_LE(d.deadline, clock_type::now() + 1s);
}

TEST(IdleDeadline, AHeadPastItsDeadlineKeepsItSoTheWatchdogEndsTheConnection) {
  idle_deadline d = relaying(5min, 1ns);
  d.start_head();
  while (clock_type::now() < d.head_by) {
  }
  d.end_head(false);  // as when the watchdog's cancellation ends the head's read
  EXPECT_TRUE(d.past_head_by());
  d.touch();
  EXPECT_LE(d.deadline, clock_type::now());
}

TEST(IdleDeadline, AHeadThatCameWholeJustPastItsDeadlineCountsAsInTime) {
  idle_deadline d = relaying(5min, 1ns);
  d.start_head();
  while (clock_type::now() < d.head_by) {
  }
  d.end_head(true);  // its last read completed before the watchdog ran: it goes up
  EXPECT_FALSE(d.past_head_by());
  EXPECT_GE(d.deadline, clock_type::now() + 5min - 1s);
}

TEST(IdleDeadline, NoHeadLimitNoIdleTimeoutNoDeadline) {
  idle_deadline d = relaying(0s, 0s);
  d.start_head();
  d.touch();
  EXPECT_EQ(d.deadline, clock_type::time_point::max());
  EXPECT_FALSE(d.past_head_by());
}

TEST(IdleDeadline, AHeadLimitHoldsWithoutAnIdleTimeoutAndEndsWithTheHead) {
  idle_deadline d = relaying(0s, 1s);
  d.start_head();
  EXPECT_LE(d.deadline, clock_type::now() + 1s);
  d.end_head(true);
  EXPECT_EQ(d.deadline, clock_type::time_point::max());
}

TEST(IdleDeadline, TheHalfCloseDeadlineStillCapsAfterAHead) {
  idle_deadline d = relaying(5min, 1s);
  d.half_close = 2s;
  d.start_half_close();
  const auto close_by = d.close_by;
  d.start_head();
  d.end_head(true);
  EXPECT_EQ(d.deadline, close_by);
}

TEST(IdleDeadline, ATouchWithoutAnIdleTimeoutLeavesAnotherPhasesDeadlineAlone) {
  idle_deadline d;  // as session::enter leaves it for the closing phase
  d.deadline = clock_type::now() + 1s;
  const auto closing_by = d.deadline;
  d.touch();  // linger_close reading what the client still sends
  EXPECT_EQ(d.deadline, closing_by);
}

}  // namespace
