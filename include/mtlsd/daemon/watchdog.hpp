#pragma once
// systemd's service watchdog (WatchdogSec=): sends WATCHDOG=1 from the control loop at half the
// interval systemd gives (WATCHDOG_USEC), but only while every worker's event loop answers, so a
// wedged worker gets the service restarted. Does nothing when the watchdog is not enabled.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace mtlsd::daemon {

class watchdog {
 public:
  // `workers`: each worker's io_context; they must outlive this object's timer (the daemon stops
  // the control loop, which owns the timer, before it stops the workers).
  watchdog(boost::asio::io_context& control, std::vector<boost::asio::io_context*> workers);
  // Reads WATCHDOG_USEC (and WATCHDOG_PID) through sd_watchdog_enabled(); false when off.
  bool start();

 private:
  void tick();

  // Shared with the no-ops posted to workers: each stores the round it answered.
  struct state {
    explicit state(std::size_t n) : answered(n) {}
    std::vector<std::atomic<std::uint64_t>> answered;
  };

  boost::asio::steady_timer timer_;
  std::vector<boost::asio::io_context*> workers_;
  std::shared_ptr<state> state_;
  std::chrono::microseconds period_{};
  std::uint64_t round_ = 0;
  bool stalled_ = false;
};

}  // namespace mtlsd::daemon
