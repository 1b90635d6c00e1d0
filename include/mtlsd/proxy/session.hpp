#pragma once
// One connection = one coroutine: handshake (with a deadline) -> decide (verify + allow list) ->
// connect upstream (with a deadline) -> relay -> one access-log line and the metric updates.
// A watchdog runs beside it and enforces whichever deadline the current phase has; `kill()`
// (drain timeout, revocation) ends it the same way.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <memory>
#include <unordered_set>

#include "mtlsd/proxy/net.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::proxy {

// The handle a worker keeps on each live session, to close it from outside.
class session_control {
 public:
  void kill();
  bool killed() const { return killed_; }
  void attach(asio::steady_timer* watchdog) { watchdog_ = watchdog; }

 private:
  bool killed_ = false;
  asio::steady_timer* watchdog_ = nullptr;
};

// Live sessions of one worker. Single-threaded: only touched from that worker's io_context.
class session_registry {
 public:
  void add(session_control* s) { live_.insert(s); }
  void remove(session_control* s) { live_.erase(s); }
  void kill_all();
  std::size_t size() const { return live_.size(); }

 private:
  std::unordered_set<session_control*> live_;
};

// Serves one accepted connection of `listener` to the end. Never throws for network errors.
asio::awaitable<void> run_session(stream_socket peer,
                                  std::shared_ptr<const runtime::listener_runtime> listener,
                                  session_registry& registry);

}  // namespace mtlsd::proxy
