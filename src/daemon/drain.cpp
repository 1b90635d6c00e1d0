// Signals, and stopping: SIGTERM/SIGINT close the listeners and wait for open connections to
// finish (shutdown.drain_timeout), a second signal or the timeout closes them, and the control
// loop ends once none is left. The wait is woken by the worker that ends the last session, not
// by polling.
#include <boost/asio/post.hpp>
#include <csignal>

#include "daemon_state.hpp"
#include "mtlsd/config/duration.hpp"
#include "mtlsd/daemon/sd_notify.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon::detail {

namespace {
// After sessions were told to close: how long they get to finish their close.
constexpr auto kill_grace = std::chrono::seconds(2);
}  // namespace

void daemon::wait_for_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGUSR1)
      log::reopen();
    else if (sig == SIGHUP)
      reload("SIGHUP");
    else
      drain(sig == SIGINT ? "SIGINT" : "SIGTERM");
    wait_for_signal();
  });
}

void daemon::drain(const std::string& trigger) {
  if (draining_) {
    // A second signal: stop waiting for connections to finish.
    log::warn("second stop signal: closing open connections now", {{"signal", trigger}});
    kill_open_sessions();
    drain_timer_.cancel();  // wait_for_drain() looks again, with the new deadline
    return;
  }
  draining_ = true;
  const auto timeout = runtime_->cfg.shutdown.drain_timeout;
  log::info("draining", {{"signal", trigger},
                         {"open_connections", open_sessions_.count()},
                         {"drain_timeout", config::format_duration(timeout)}});
  // After the line: sd_notify's send blocks while the notify socket's queue is full, and the
  // log then says where the drain stands.
  notify_stopping();
  for (auto& w : workers_) {
    w->close_all_listeners();
    w->drain_sessions();  // HTTP: GOAWAY / Connection: close now, not at the timeout
  }
  drain_deadline_ = steady::now() + timeout;
  // Called on the worker that ends the last session: wakes wait_for_drain() at once.
  open_sessions_.call_when_none(
      [this] { asio::post(control_, [this] { drain_timer_.cancel(); }); });
  wait_for_drain();
}

void daemon::kill_open_sessions() {
  for (auto& w : workers_)
    w->kill_sessions();
  // From the first kill only: a supervisor repeating SIGTERM faster than kill_grace would
  // otherwise put the exit off for ever (review).
  if (!killed_) hard_deadline_ = steady::now() + kill_grace;
  killed_ = true;
}

// Looks at the open sessions now, and again when the timer fires: at the next deadline, or
// earlier when it is cancelled (the last session ended, or a second signal came).
void daemon::wait_for_drain() {
  const auto now = steady::now();
  const int open = open_sessions_.count();
  if (open == 0 || (killed_ && now >= hard_deadline_)) return stop_control_loop(open);
  if (!killed_ && now >= drain_deadline_) {
    log::warn("drain timeout reached: closing open connections", {{"open_connections", open}});
    kill_open_sessions();
  }
  drain_timer_.expires_at(killed_ ? hard_deadline_ : drain_deadline_);
  drain_timer_.async_wait([this](const boost::system::error_code&) { wait_for_drain(); });
}

void daemon::stop_control_loop(int open) {
  log::info("drained", {{"open_connections", open}});
  if (admin_) admin_->stop();
  upstream_checks_->stop();
  expiry_.reset();
  watcher_.reset();
  signals_.cancel();
  control_.stop();
}

}  // namespace mtlsd::daemon::detail
