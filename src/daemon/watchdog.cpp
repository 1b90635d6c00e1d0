#include "mtlsd/daemon/watchdog.hpp"

#include <systemd/sd-daemon.h>

#include <boost/asio/post.hpp>

#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {

watchdog::watchdog(boost::asio::io_context& control, std::vector<boost::asio::io_context*> workers)
    : timer_(control),
      workers_(std::move(workers)),
      state_(std::make_shared<state>(workers_.size())) {}

bool watchdog::start() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return false;
  // Half the interval, as sd_watchdog_enabled(3) recommends: one late tick does not kill us.
  period_ = std::chrono::microseconds(usec / 2);
  log::info("systemd watchdog enabled",
            {{"interval_ms", static_cast<std::int64_t>(usec / 1000)},
             {"ping_every_ms", static_cast<std::int64_t>(period_.count() / 1000)}});
  tick();
  return true;
}

// Each tick pings systemd if every worker ran the no-op posted at the previous tick (so each had
// half the interval to get to it), then posts the next round. A worker stuck in a handler for
// longer leaves the ping out, and systemd restarts the service after the full interval.
void watchdog::tick() {
  bool all = true;
  for (const auto& a : state_->answered)
    if (a.load(std::memory_order_acquire) < round_) all = false;
  if (all && round_ > 0) {
    sd_notify(0, "WATCHDOG=1");
    if (stalled_) log::info("every worker answers again; pinging the systemd watchdog");
    stalled_ = false;
  } else if (round_ > 0 && !stalled_) {
    // Once per stall, not at every tick.
    log::warn("a worker did not answer within half the watchdog interval; not pinging systemd");
    stalled_ = true;
  }
  ++round_;
  for (std::size_t i = 0; i < workers_.size(); ++i)
    boost::asio::post(*workers_[i], [s = state_, i, r = round_] {
      s->answered[i].store(r, std::memory_order_release);
    });
  timer_.expires_after(period_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

}  // namespace mtlsd::daemon
