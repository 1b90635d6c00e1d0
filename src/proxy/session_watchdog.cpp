// The session's watchdog: enforces the current phase's deadline, timeouts.max_connection_age
// and kill(). A timer callback on the session's own timer rather than a coroutine racing the
// serving side in a parallel group: an idle connection then holds no coroutine frame, no
// co_spawn entry frame and no group state for it (~1 KiB each connection, measured with
// heaptrack). It ends the serving side the way the group did, by emitting cancellation on the
// serving coroutine's slot (session::stop_serving).
#include <algorithm>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <exception>
#include <utility>

#include "mtlsd/util/exception.hpp"
#include "relay_pump.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

// timeouts.max_connection_age passed: a graceful close, bounded by timeouts.half_close, or its
// 30 s default when that is 0s (a stream that keeps moving, a download read slowly, would
// otherwise keep the connection for good). In HTTP mode, as a drain of this one connection: an
// HTTP/2 client gets GOAWAY and the streams under way finish, an HTTP/1.1 one the end of the
// exchange under way (Connection: close), then the lingering close. Layer 4, and an HTTP/1.1
// connection upgraded to a byte relay, have no boundary to wait for: each pump of the relay stops
// reading once what already arrived is relayed and passes the end on as at any EOF (close_notify +
// FIN to the client, FIN to the upstream), with no write cut in the middle (relay_state::age);
// timeouts.half_close bounds the rest, then the lingering close, as in HTTP mode: the client
// may still be sending, and a close over its unread bytes would reset the connection and lose
// what was still queued for it. (Both sockets used to be shut down for reading, and Linux
// answers data arriving after that, once the FIN went, with a reset: review, a client that sent
// while it read its download got 1.6 of 4 MiB. HTTP mode did that too: an HTTP/2 stream under
// way was cut off with no GOAWAY, an HTTP/1.1 upload read as the client's end.)
void close_for_age(session& s) {
  s.aged = true;
  s.age_limit = steady::time_point::max();
  if (s.clock.half_close.count() == 0) s.clock.half_close = config::timeout_options{}.half_close;
  s.clock.start_half_close();
  if (s.listener->cfg.http.enabled && !s.relayed.tunnel)
    s.control.drain_gracefully();
  else
    age_relay(s.relayed);
}

// The watchdog's verdict, then the serving side's cancellation. Nothing may touch `s` after the
// emit: the serving side can run to its end inside it, and the session with it.
void stop_serving(session& s, outcome verdict) {
  s.watchdog_verdict = std::move(verdict);
  s.stop_serving->emit(asio::cancellation_type::all);
}

void look(session& s);

// The timer's completion. Aborted or not, it looks again: enter(), kill() and an earlier
// deadline cancel the wait precisely to be looked at.
struct wake {
  session* s;
  void operator()(const error_code&) const {
    --s->watchdog_waits;
    if (s->orphaned) {
      if (s->watchdog_waits == 0) delete s;
      return;
    }
    if (!s->serving_over) look(*s);
  }
};

// Decides, or waits for the next deadline. A throw must not reach the worker's event loop: an
// internal error ends the session as `result=error`, as any other.
void look(session& s) {
  try {
    for (;;) {
      if (s.control.killed()) return stop_serving(s, outcome{outcome::kind::killed, {}});
      const auto now = steady::now();
      if (now >= s.age_limit) {
        close_for_age(s);
        continue;
      }
      if (now >= s.clock.deadline) return stop_serving(s, outcome{outcome::kind::deadline, {}});
      s.watchdog_timer.expires_at(std::min(s.clock.deadline, s.age_limit));
      s.watchdog_timer.async_wait(wake{&s});
      ++s.watchdog_waits;
      return;
    }
  } catch (...) {
    stop_serving(s, outcome{outcome::kind::failed, util::message_of(std::current_exception())});
  }
}

}  // namespace

void start_watchdog(session& s) {
  // No deadline until the serving side enters its first phase (enter() wakes the watchdog).
  s.clock.deadline = steady::time_point::max();
  look(s);
}

asio::awaitable<void> stop_watchdog(session& s) {
  s.serving_over = true;
  s.watchdog_timer.cancel();
  // Its completion is queued now (aborted, or expired just before): wait for it to run, since
  // it reads the session. One turn of the loop is normally enough.
  while (s.watchdog_waits > 0)
    co_await asio::post(s.watchdog_timer.get_executor(), asio::deferred);
}

}  // namespace mtlsd::proxy::detail
